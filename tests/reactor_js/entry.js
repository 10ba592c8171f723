// The test page's script (bundled by esbuild with @reactor-team/js-sdk 2.9.0, the release
// on npm): scenarios of tests/test_reactor_js.py, each returning what the client saw.
import { Reactor } from "@reactor-team/js-sdk";

const RED = "a red circle moving right on a black background";
const BLUE = "a blue square moving down on a black background";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function colourOf(data) {
  let red = 0, blue = 0;
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    if (r > 140 && g < 90 && b < 90) red++;
    else if (b > 140 && r < 90 && g < 110) blue++;
  }
  if (Math.max(red, blue) < data.length / 4 / 200) return "none";
  return red > blue ? "red" : "blue";
}

class Watcher {
  constructor(apiUrl) {
    this.t0 = performance.now();
    this.reactor = new Reactor({ modelName: "longlive", local: true, apiUrl });
    this.frames = [];
    this.messages = [];
    this.errors = [];
    this.statuses = [];
    this.reactor.on("message", (m) => this.messages.push({ t: this.now(), msg: m }));
    this.reactor.on("error", (e) => this.errors.push({ t: this.now(), code: e && e.code, message: e && e.message }));
    this.reactor.on("statusChanged", (s) => this.statuses.push(s));
    this.reactor.on("trackReceived", (name, track, stream) => this.attach(name, track, stream));
  }
  now() { return (performance.now() - this.t0) / 1000; }
  attach(name, track, stream) {
    if (name !== "main_video") return;
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = stream || new MediaStream([track]);
    document.body.appendChild(video);
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (_now, meta) => {
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      let c = "none";
      if (canvas.width > 0) {
        ctx.drawImage(video, 0, 0);
        c = colourOf(ctx.getImageData(0, 0, canvas.width, canvas.height).data);
      }
      this.frames.push([this.now(), c, [video.videoHeight, video.videoWidth], meta.presentedFrames]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.play().catch(() => {});
  }
  async connect() {
    const start = performance.now();
    await this.reactor.connect();
    for (let i = 0; i < 200 && this.reactor.getStatus() !== "ready"; i++) await sleep(50);
    return (performance.now() - start) / 1000;
  }
  count() { return this.frames.length; }
  // Wait for `n` more frames (or `timeout` ms): waits follow the model's speed, not a fixed time.
  async framesUntil(n, timeout) {
    const target = this.count() + n, end = performance.now() + timeout;
    while (this.count() < target && performance.now() < end) await sleep(50);
  }
  // Wait until no frame came for `ms` (the video stopped).
  async quiet(ms, timeout) {
    const end = performance.now() + timeout;
    while (performance.now() < end) {
      const last = this.frames.length ? this.frames[this.frames.length - 1][0] : 0;
      if (this.now() - last >= ms / 1000) return;
      await sleep(50);
    }
  }
  report() { return { frames: this.frames, messages: this.messages, errors: this.errors, statuses: this.statuses }; }
}

window.mainScenario = async (apiUrl) => {
  const w = new Watcher(apiUrl);
  const out = { marks: {} };
  out.connect_s = await w.connect();
  out.status = w.reactor.getStatus();
  await w.reactor.sendCommand("schedule_prompt", { new_prompt: RED, timestamp: 0 });
  await w.reactor.sendCommand("schedule_prompt", { new_prompt: BLUE, timestamp: 12 });
  out.marks.start = w.now();
  await w.reactor.sendCommand("start", {});
  await w.reactor.sendCommand("resume", {});  // refused: not paused (a command_error message)
  await w.framesUntil(64, 30000);
  out.marks.pause = w.now();
  await w.reactor.sendCommand("pause", {});
  await w.quiet(2500, 15000);  // the block being generated when paused still comes
  out.marks.paused_from = w.now();
  await sleep(1000);
  out.marks.paused_to = w.now();
  await w.reactor.sendCommand("resume", {});
  await w.framesUntil(5, 15000);
  out.marks.resumed_to = w.now();
  await w.reactor.sendCommand("reset", {});
  await sleep(500);
  await w.reactor.sendCommand("get_state", {});
  await sleep(500);
  out.marks.reconnect = w.now();
  await w.reactor.disconnect(true);
  await w.reactor.reconnect();
  for (let i = 0; i < 200 && w.reactor.getStatus() !== "ready"; i++) await sleep(50);
  out.reconnected_status = w.reactor.getStatus();
  await w.reactor.sendCommand("schedule_prompt", { new_prompt: RED, timestamp: 0 });
  await w.reactor.sendCommand("start", {});
  await w.framesUntil(12, 20000);
  out.marks.end = w.now();
  await w.reactor.sendCommand("reset", {});
  await sleep(200);
  await w.reactor.disconnect();
  Object.assign(out, w.report());
  return out;
};
