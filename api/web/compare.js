// The before/after player: the restored video over the original, cut by a split slider, played in step.

export class ComparePlayer {
  constructor(root) {
    this.box = root.querySelector("#compare");
    this.before = root.querySelector("#before");
    this.after = root.querySelector("#after");
    this.play = root.querySelector("#play");
    this.seek = root.querySelector("#seek");
    this.split = root.querySelector("#split");
    this.note = root.querySelector("#before-note");
    this.split.addEventListener("input", () => this.box.style.setProperty("--split", `${this.split.value}%`));
    this.play.addEventListener("click", () => (this.after.paused ? this.after.play() : this.after.pause()));
    this.seek.addEventListener("input", () => {
      if (this.after.duration) this.after.currentTime = (this.seek.value / 1000) * this.after.duration;
    });
    // The restored video leads; the original follows it (play, pause, seek, and drift while playing).
    this.after.addEventListener("play", () => { this.follow(); this.hasBefore() && this.before.play(); });
    this.after.addEventListener("pause", () => { this.before.pause(); this.follow(); });
    this.after.addEventListener("seeked", () => this.follow());
    this.after.addEventListener("timeupdate", () => {
      if (Math.abs(this.before.currentTime - this.after.currentTime) > 0.1) this.follow();
      if (this.after.duration) this.seek.value = Math.round((this.after.currentTime / this.after.duration) * 1000);
    });
    this.after.addEventListener("ended", () => { this.play.textContent = "Play"; });
    this.after.addEventListener("play", () => { this.play.textContent = "Pause"; });
    this.after.addEventListener("pause", () => { this.play.textContent = "Play"; });
  }

  hasBefore() {
    return Boolean(this.before.getAttribute("src"));
  }

  follow() {
    if (this.hasBefore()) this.before.currentTime = this.after.currentTime;
  }

  // ``beforeUrl`` is the user's own file (an object URL), or null when this tab did not submit the job.
  show(afterUrl, beforeUrl) {
    this.after.pause();
    this.after.src = afterUrl;
    if (beforeUrl) this.before.src = beforeUrl;
    else this.before.removeAttribute("src");
    this.before.hidden = !beforeUrl;
    this.box.classList.toggle("after-only", !beforeUrl);
    this.split.disabled = !beforeUrl;
    this.note.hidden = Boolean(beforeUrl);
    this.seek.value = 0;
    this.play.textContent = "Play";
  }
}
