// The per-frame identity plot: distance to the reference before and after restoration, as inline SVG.

const SVG = "http://www.w3.org/2000/svg";
const SIZE = { width: 480, height: 260, left: 48, right: 12, top: 12, bottom: 34 };

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A frame's distance: its closest face (the person the reference shows), or null without a measured face.
function closest(distances) {
  const measured = (distances || []).filter((d) => typeof d === "number");
  return measured.length ? Math.min(...measured) : null;
}

// Round tick values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi], about ``count`` of them.
function ticks(lo, hi, count) {
  const rough = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
  return out;
}

function decimals(values) {
  const step = values.length > 1 ? values[1] - values[0] : 1;
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

// Polyline points of the measured frames. Frames between two measurements (the report samples identity
// every few frames) are bridged; a frame where no face was found at all ends the line.
function runs(frames, key, x, y) {
  const out = [];
  let run = [];
  for (const frame of frames) {
    const d = closest(frame[key]);
    if (d !== null) {
      run.push([x(frame.index), y(d)]);
    } else if (!frame.faces) {
      if (run.length) out.push(run);
      run = [];
    }
  }
  if (run.length) out.push(run);
  return out;
}

export function drawIdentityPlot(svg, report) {
  svg.replaceChildren();
  const frames = report.frames || [];
  const threshold = report.identity ? report.identity.same_person_threshold : null;
  const values = frames.flatMap((f) => [closest(f.distance_before), closest(f.distance_after)])
    .filter((d) => d !== null);
  if (!values.length) {
    svg.append(element("text", { x: SIZE.width / 2, y: SIZE.height / 2, "text-anchor": "middle", class: "empty" },
      "no face was measured in this video"));
    return 0;
  }
  if (threshold !== null) values.push(threshold);
  const pad = Math.max(0.02, (Math.max(...values) - Math.min(...values)) * 0.1);
  const lo = Math.max(0, Math.min(...values) - pad), hi = Math.max(...values) + pad;
  const last = Math.max(1, frames[frames.length - 1].index);
  const plotW = SIZE.width - SIZE.left - SIZE.right, plotH = SIZE.height - SIZE.top - SIZE.bottom;
  const x = (i) => SIZE.left + (i / last) * plotW;
  const y = (d) => SIZE.top + (1 - (d - lo) / (hi - lo)) * plotH;

  const axes = element("g", { class: "axes" });
  const yTicks = ticks(lo, hi, 6);
  for (const t of yTicks) {
    axes.append(element("line", { x1: SIZE.left, x2: SIZE.width - SIZE.right, y1: y(t), y2: y(t), class: "grid" }));
    axes.append(element("text", { x: SIZE.left - 6, y: y(t) + 4, "text-anchor": "end" }, t.toFixed(decimals(yTicks))));
  }
  for (const t of ticks(0, last, 5).filter((t) => Number.isInteger(Math.round(t * 1e6) / 1e6))) {
    axes.append(element("text", { x: x(t), y: SIZE.height - SIZE.bottom + 16, "text-anchor": "middle" },
      String(Math.round(t))));
  }
  axes.append(element("text", { x: SIZE.left + plotW / 2, y: SIZE.height - 4, "text-anchor": "middle" }, "frame"));
  svg.append(axes);
  if (threshold !== null) {
    svg.append(element("line", { x1: SIZE.left, x2: SIZE.width - SIZE.right, y1: y(threshold), y2: y(threshold),
      class: "threshold" }));
  }
  let lines = 0;
  for (const [key, name] of [["distance_before", "before"], ["distance_after", "after"]]) {
    for (const run of runs(frames, key, x, y)) {
      const points = run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
      const line = element("polyline", { points, class: `series ${name}` });
      line.append(element("title", {}, name));
      svg.append(line);
      for (const [px, py] of run) svg.append(element("circle", { cx: px.toFixed(1), cy: py.toFixed(1), r: 2.5, class: `point ${name}` }));
      lines += 1;
    }
  }
  const legend = element("g", { class: "legend" });
  [["before", "before"], ["after", "after"]].forEach(([name, label], i) => {
    const lx = SIZE.width - SIZE.right - 150 + i * 75;
    legend.append(element("line", { x1: lx, x2: lx + 18, y1: SIZE.top + 8, y2: SIZE.top + 8, class: `series ${name}` }));
    legend.append(element("text", { x: lx + 22, y: SIZE.top + 12 }, label));
  });
  svg.append(legend);
  return lines;
}
