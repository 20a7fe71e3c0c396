// The page: API key, job submission, the job list with live progress, and a finished job's result.

import { ApiError, apiKey, createJob, request } from "./api.js";
import { ComparePlayer } from "./compare.js";
import { drawIdentityPlot } from "./plot.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const POLL_MS = 1000;

const state = {
  jobs: [], // the listed jobs, newest first
  selected: null, // the job shown below the list (its latest object)
  shown: null, // id of the job whose result is on screen (its videos load once)
  originals: new Map(), // job id -> object URL of the video this tab submitted (the "before")
  firstProgress: new Map(), // job id -> {t, percent}: the first progress seen, for the ETA
  timer: null,
};
const player = new ComparePlayer($("result"));

function showError(error) {
  const box = $("error");
  box.textContent = error ? (error instanceof ApiError ? error.words : String(error.message || error)) : "";
  box.hidden = !error;
}

// ------------------------------------------------------------------------------------------ API key
function takeKeyFromFragment() {
  // `ipfvr dev` prints the page's URL as /#key=<API key>: the fragment never reaches a server.
  const key = new URLSearchParams(location.hash.slice(1)).get("key");
  if (key) {
    apiKey.set(key);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function useKey(event) {
  event.preventDefault();
  apiKey.set($("api-key").value.trim());
  state.jobs = [];
  state.selected = null;
  state.shown = null;
  $("job-section").hidden = true;
  refresh();
}

function forgetKey() {
  apiKey.set("");
  $("api-key").value = "";
  state.jobs = [];
  state.selected = null;
  $("job-section").hidden = true;
  renderJobs();
}

// ------------------------------------------------------------------------------------------ submit
function jobOptions() {
  const options = {
    faces: $("opt-faces").value,
    upscale: Number($("opt-upscale").value),
    background: $("opt-background").value,
  };
  for (const [name, id] of [["engine", "opt-engine"], ["prompt", "opt-prompt"], ["negative_prompt", "opt-negative-prompt"]]) {
    const value = $(id).value.trim();
    if (value) options[name] = value;
  }
  for (const [name, id] of [["seed", "opt-seed"], ["guidance", "opt-guidance"]]) {
    if ($(id).value !== "") options[name] = Number($(id).value);
  }
  return options;
}

async function submit(event) {
  event.preventDefault();
  showError(null);
  const video = $("video").files[0];
  const form = new FormData();
  form.append("options", JSON.stringify(jobOptions()));
  form.append("video", video, video.name);
  for (const photo of $("references").files) form.append("reference", photo, photo.name);
  const progress = $("upload-progress");
  progress.hidden = false;
  $("submit").disabled = true;
  try {
    const job = await createJob(form, (fraction) => { progress.value = fraction; });
    state.originals.set(job.id, URL.createObjectURL(video));
    select(job);
    await refresh();
  } catch (error) {
    showError(error);
  } finally {
    progress.hidden = true;
    progress.value = 0;
    $("submit").disabled = false;
  }
}

// ------------------------------------------------------------------------------------------ jobs
function percentOf(job) {
  if (job.status === "succeeded") return 100;
  return job.progress ? job.progress.percent : 0;
}

function eta(job) {
  const percent = percentOf(job);
  if (!job.progress || !["starting", "processing"].includes(job.status)) return null;
  const now = performance.now() / 1000;
  const first = state.firstProgress.get(job.id);
  if (!first) {
    state.firstProgress.set(job.id, { t: now, percent });
    return null;
  }
  if (percent <= first.percent) return null;
  return ((now - first.t) * (100 - percent)) / (percent - first.percent);
}

function describe(job) {
  const parts = [job.status];
  if (job.status === "queued" && job.queue_position !== null) parts.push(`${job.queue_position} ahead in the queue`);
  if (job.progress && !TERMINAL.has(job.status)) {
    const p = job.progress;
    const unit = ["analyze", "restore"].includes(p.stage) ? "frame" : "step";
    parts.push(`${p.stage}: ${unit} ${p.current} of ${p.total}`, `${p.percent.toFixed(0)}%`);
    const seconds = eta(job);
    if (seconds !== null) parts.push(`about ${seconds < 90 ? `${Math.ceil(seconds)} s` : `${Math.ceil(seconds / 60)} min`} left`);
  }
  if (job.status === "succeeded" && job.metrics.total_time !== null) parts.push(`in ${job.metrics.total_time.toFixed(1)} s`);
  return parts.join(" · ");
}

function renderJobs() {
  const body = $("jobs").querySelector("tbody");
  body.replaceChildren(...state.jobs.map((job) => {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    row.className = `status-${job.status}${state.selected && state.selected.id === job.id ? " selected" : ""}`;
    const created = new Date(job.created_at).toLocaleString();
    for (const text of [job.id, created, job.status, `${percentOf(job).toFixed(0)}%`]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    row.addEventListener("click", () => select(job));
    return row;
  }));
  $("jobs-empty").hidden = state.jobs.length > 0;
}

async function refresh() {
  if (!apiKey.get()) {
    showError(new ApiError(401, "unauthorized", "enter an API key to see your jobs"));
    return;
  }
  try {
    state.jobs = (await request("/v1/jobs?limit=50")).data;
    if (state.selected) {
      const listed = state.jobs.find((job) => job.id === state.selected.id);
      state.selected = listed || (await request(`/v1/jobs/${state.selected.id}`));
    }
    showError(null);
  } catch (error) {
    showError(error);
  }
  renderJobs();
  if (state.selected) renderJob(state.selected);
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  const active = state.jobs.some((job) => !TERMINAL.has(job.status))
    || (state.selected && !TERMINAL.has(state.selected.status));
  if (active) state.timer = setTimeout(refresh, POLL_MS);
}

async function cancel() {
  try {
    state.selected = await request(`/v1/jobs/${state.selected.id}/cancel`, { method: "POST" });
    await refresh();
  } catch (error) {
    showError(error);
  }
}

// ------------------------------------------------------------------------------------------ one job
function select(job) {
  state.selected = job;
  renderJobs();
  renderJob(job);
  schedule();
}

function renderJob(job) {
  $("job-section").hidden = false;
  $("job-id").textContent = job.id;
  $("job-status").textContent = describe(job);
  $("job-status").dataset.status = job.status;
  $("job-progress").value = percentOf(job);
  $("cancel").hidden = TERMINAL.has(job.status);
  const failed = job.error ? job.error : null;
  $("job-error").hidden = !failed;
  $("job-error").textContent = failed ? new ApiError(0, failed.code, failed.message, failed.field).words : "";
  if (job.status !== "succeeded" || !job.output) {
    $("result").hidden = true;
    state.shown = null;
    return;
  }
  if (state.shown !== job.id) showResult(job);
}

async function showResult(job) {
  state.shown = job.id;
  $("result").hidden = false;
  const output = job.output;
  if (!output.video_url) {
    $("job-error").hidden = false;
    $("job-error").textContent = "The job's files were removed (retention or delete); only its summary is left.";
  } else {
    player.show(output.video_url, state.originals.get(job.id) || null);
    $("download").href = output.video_url;
    $("report-link").href = output.report_url || "#";
  }
  renderSummary(output.report || {});
  try {
    drawIdentityPlot($("plot"), await request(`/v1/jobs/${job.id}/report`));
  } catch (error) {
    $("plot").replaceChildren();
    showError(error);
  }
}

function renderSummary(report) {
  const identity = report.identity || {};
  const mean = (side) => (identity[side] && identity[side].mean !== null && identity[side].mean !== undefined
    ? identity[side].mean.toFixed(3) : "not measured");
  const rows = [
    ["Frames restored", `${report.frames_restored ?? "?"} of ${report.frames_total ?? "?"}`],
    ["Identity distance before", `${mean("before")} (${identity.metric || "?"}; same person below ${identity.same_person_threshold ?? "?"})`],
    ["Identity distance after", mean("after")],
    ["Frames measured", identity.frames_measured === undefined ? "?" : `${identity.frames_measured} (${
      (identity.embed_every ?? 1) === 1 ? "every frame" : `1 frame in ${identity.embed_every}, and where tracks start`})`],
    ["Mean improvement", identity.mean_improvement !== undefined && identity.mean_improvement !== null
      ? identity.mean_improvement.toFixed(3) : "not measured"],
    ["Engine", (report.versions && report.versions.engine) || "?"],
    ["Time", report.timings_s ? `${report.timings_s.total} s (${report.fps} frames/s)` : "?"],
  ];
  for (const warning of report.warnings || []) rows.push(["Warning", warning]);
  $("summary").replaceChildren(...rows.flatMap(([term, value]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    return [dt, dd];
  }));
}

// ------------------------------------------------------------------------------------------ start
takeKeyFromFragment();
$("api-key").value = apiKey.get();
$("key-form").addEventListener("submit", useKey);
$("forget-key").addEventListener("click", forgetKey);
$("job-form").addEventListener("submit", submit);
$("refresh").addEventListener("click", refresh);
$("cancel").addEventListener("click", cancel);
if (apiKey.get()) refresh();
