// LongLive live view: a browser client of the LongLive runner protocol, version 1
// (docs/protocol.md). It uses only the browser's WebSocket: JSON text messages both ways and
// binary video frames from the runner (a 28-byte little-endian header, then RGB24 pixels).
// No build step, no dependencies.
(() => {
  "use strict";

  const PROTOCOL_VERSION = 1;
  const FRAME_MAGIC = [0x4c, 0x4c, 0x56, 0x46]; // "LLVF"
  const FRAME_HEADER_SIZE = 28;
  const PIXEL_FORMAT_RGB24 = 1;
  const MAX_SEED = 9223372036854775807n; // 2**63 - 1
  const COMMAND_TIMEOUT_MS = 15000;
  // Frames waiting to be drawn (the playback buffer): up to 30 s of video or 256 MB, whichever is
  // less. A paced runner (`serve`'s default) keeps it within ~2 blocks; the oldest frames are only
  // skipped when a runner without pacing, or a hidden tab, overfills it.
  const MAX_BUFFER_SECONDS = 30;
  const MAX_BUFFER_BYTES = 256 * 2 ** 20;
  const DRAW_LOG = 2000; // draw times kept for tests and the console (window.longliveLiveView)
  const FPS_WINDOW_MS = 3000;
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const LOG_LINES = 100;

  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"),
    modelInfo: $("model-info"),
    banner: $("connection-banner"),
    canvas: $("canvas"),
    screenNote: $("screen-note"),
    frameCounter: $("frame-counter"),
    frameDetail: $("frame-detail"),
    fps: $("fps"),
    receiveFps: $("receive-fps"),
    phase: $("phase"),
    seedInUse: $("seed-in-use"),
    dropped: $("dropped"),
    skipped: $("skipped"),
    currentPrompt: $("current-prompt"),
    promptInput: $("prompt-input"),
    timestampInput: $("timestamp-input"),
    secondsInput: $("seconds-input"),
    scheduleBtn: $("schedule-btn"),
    scheduleHint: $("schedule-hint"),
    scheduleWarning: $("schedule-warning"),
    seedInput: $("seed-input"),
    startBtn: $("start-btn"),
    pauseBtn: $("pause-btn"),
    resumeBtn: $("resume-btn"),
    resetBtn: $("reset-btn"),
    smoothInput: $("smooth-input"),
    downloadBtn: $("download-btn"),
    timeline: $("timeline"),
    promptList: $("prompt-list"),
    runnerError: $("runner-error"),
    log: $("log"),
  };
  const ctx = el.canvas.getContext("2d");

  // ------------------------------------------------------------------------------------------
  // State
  // ------------------------------------------------------------------------------------------
  const S = {
    ws: null,
    hello: null,
    state: null, // the last `state` data
    generation: -1, // the newest generation seen
    csf: 0, // current_start_frame
    videoFrame: 0,
    incompatible: false,
    attempt: 0, // reconnection attempts since the last successful hello
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    pending: new Map(), // command id -> {type, errorKey, resolve, reject, timer}
    nextId: 1,
    errors: new Map(), // error key -> text (the error shown next to a control)
    queue: [], // frames waiting to be drawn (each waits for its bitmap from the decoder)
    playClock: null, // performance.now() when the next frame is due (null: play the next one at once)
    drawLog: [], // {videoFrame, generation, t}: when each frame was drawn (performance.now())
    imageData: null, // only without the decoder worker
    decodeIds: 0,
    decoding: new Map(), // id -> frame whose bitmap the decoder is making
    framesShown: 0,
    framesSkipped: 0,
    lastVideoFrame: -1,
    lastBlock: -1,
    arrivals: [], // performance.now() of recent frames' arrivals, for the "receiving" meter
    droppedByRunner: 0,
    seedText: null, // the seed in use, as the runner wrote it (exact beyond 2**53)
    recording: null,
    lastRecording: null,
  };

  // The page's own URL holds the token (?token=...): it is passed on to the websocket and /info.
  const pageUrl = new URL(window.location.href);
  const token = pageUrl.searchParams.get("token");

  function runnerUrl(path, scheme) {
    const url = new URL(path, new URL(".", pageUrl));
    url.search = "";
    url.hash = "";
    if (scheme) url.protocol = scheme;
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }
  // On a cluster (docs/cluster.md) the page's session: `?session=ID` joins one; reconnecting rejoins it.
  let sessionId = pageUrl.searchParams.get("session");
  const wsUrl = () => {
    const url = new URL(runnerUrl("", pageUrl.protocol === "https:" ? "wss:" : "ws:"));
    if (sessionId) url.searchParams.set("session", sessionId);
    return url.toString();
  };
  const infoUrl = () => runnerUrl("info");

  // ------------------------------------------------------------------------------------------
  // Units (docs/protocol.md, section 2)
  // ------------------------------------------------------------------------------------------
  const fps = () => (S.hello && S.hello.fps) || 16;
  const fpb = () => (S.hello && S.hello.frames_per_block) || 3;
  const tc = () => (S.hello && S.hello.temporal_compression) || 4;
  const maxFrames = () => (S.hello && S.hello.max_frames) || 1024;
  const firstVideoFrame = (f) => (f <= 0 ? 0 : 1 + tc() * (f - 1));
  const latentOfVideoFrame = (v) => Math.floor((v + tc() - 1) / tc());
  const blockBoundary = (f) => Math.ceil(f / fpb()) * fpb();
  const seconds = (v) => (v / fps()).toFixed(2);

  function phase() {
    const st = S.state;
    if (!st) return "unknown";
    if (st.finished != null) return "finished";
    if (st.running) return st.paused ? "paused" : "running";
    return "idle";
  }

  // The first block not decided yet (P) and the last decided frame (D), section 6.2: the runner
  // sends both in `state` (`frontier`, `decided`: longlive.units.frontier_frame / decided_frame,
  // counting the block a running video is about to begin), as it sends the prompt in force
  // (`in_force`). Only the frame hint and the "applied" marks use them; the runner's reply to a
  // command is the truth.
  const undecided = () => (S.state && S.state.frontier != null ? S.state.frontier : S.csf);
  const lastDecided = () => (S.state && S.state.decided != null ? S.state.decided : -1);
  // Where the timeline ends: the rule of longlive.units.timeline_end (the notebook view's).
  function timelineEnd(lastTs) {
    const n = fpb();
    return Math.min(blockBoundary(Math.max(16 * n, S.csf + 8 * n, lastTs + 4 * n)), maxFrames());
  }
  function defaultTimestamp() {
    return Math.min(undecided(), maxFrames());
  }

  // ------------------------------------------------------------------------------------------
  // Connection
  // ------------------------------------------------------------------------------------------
  function setStatus(status, text) {
    el.status.dataset.status = status;
    el.status.textContent = text;
  }

  function showBanner(html) {
    if (html == null) {
      el.banner.hidden = true;
      el.banner.innerHTML = "";
      return;
    }
    el.banner.innerHTML = html;
    el.banner.hidden = false;
    const btn = $("reconnect-btn");
    if (btn) btn.addEventListener("click", () => connect());
  }

  function connect() {
    clearTimeout(S.retryTimer);
    clearInterval(S.countdownTimer);
    S.retryTimer = null;
    if (S.ws) {
      const old = S.ws;
      S.ws = null;
      try {
        old.close(1000, "reconnecting");
      } catch (_) {
        /* already closed */
      }
    }
    setStatus("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      onClosed({ code: 1006, reason: String(err) }, false);
      return;
    }
    ws.binaryType = "arraybuffer";
    S.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (ev) => {
      if (ws !== S.ws) return;
      if (typeof ev.data === "string") onText(ev.data);
      else onBinary(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== S.ws) return;
      S.ws = null;
      onClosed(ev, opened);
    };
    ws.onerror = () => {}; // a close event follows
  }

  function closeMeaning(code, reason) {
    switch (code) {
      case 1001:
        return "the runner is shutting down";
      case 1008:
        return reason || "refused by the runner (policy)";
      case 1009:
        return "a message was too big";
      case 1011:
        return "the runner had an internal error";
      case 1013:
        return reason || "the runner has too many clients";
      case 4404:
        return "that session has ended (a new one starts on reconnect)";
      case 1006:
        return "the connection was lost (or could not be opened)";
      default:
        return reason || `closed with code ${code}`;
    }
  }

  async function onClosed(ev, opened) {
    const wasConnected = S.hello !== null;
    S.hello = null;
    if (ev.code === 4404 || ev.code === 1011) sessionId = null; // the cluster session is over
    for (const [, p] of S.pending) {
      clearTimeout(p.timer);
      p.reject({ code: "connection_lost", reason: "the connection closed before the runner replied" });
    }
    S.pending.clear();
    if (wasConnected) addLog(`disconnected: ${closeMeaning(ev.code, ev.reason)}`, "bad");
    updateControls();
    if (S.incompatible) return;
    let why = closeMeaning(ev.code, ev.reason);
    let status = "disconnected";
    if (!opened) {
      // The handshake failed: ask /info (same auth) whether a token is missing or wrong.
      try {
        const res = await fetch(infoUrl(), { cache: "no-store" });
        if (res.status === 401 || res.status === 403) {
          status = "unauthorized";
          why = token
            ? "the runner refused the token in this page's address"
            : "the runner needs a token: open this page as <code>/?token=YOUR_TOKEN</code>";
        }
      } catch (_) {
        why = "the runner cannot be reached";
      }
    }
    if (S.ws) return; // a new connection was opened meanwhile
    scheduleReconnect(status, why);
  }

  function scheduleReconnect(status, why) {
    const delay = Math.min(RECONNECT_MIN_MS * 2 ** S.attempt, RECONNECT_MAX_MS) * (0.8 + 0.4 * Math.random());
    S.attempt += 1;
    S.retryAt = performance.now() + delay;
    setStatus(status, status === "unauthorized" ? "unauthorized" : "disconnected");
    const render = () => {
      const left = Math.max(0, Math.ceil((S.retryAt - performance.now()) / 1000));
      showBanner(
        `<strong>Not connected to the runner</strong>: ${why}. ` +
          `Reconnecting in <span id="reconnect-in">${left}</span> s… ` +
          `<button id="reconnect-btn" data-testid="reconnect-btn" class="small">reconnect now</button>`,
      );
    };
    render();
    clearInterval(S.countdownTimer);
    S.countdownTimer = setInterval(() => {
      const span = $("reconnect-in");
      if (span) span.textContent = String(Math.max(0, Math.ceil((S.retryAt - performance.now()) / 1000)));
    }, 250);
    S.retryTimer = setTimeout(connect, delay);
  }

  // ------------------------------------------------------------------------------------------
  // Incoming messages
  // ------------------------------------------------------------------------------------------
  function onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      addLog("the runner sent text that is not JSON", "bad");
      return;
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return;
    const data = msg.data && typeof msg.data === "object" ? msg.data : {};
    switch (msg.type) {
      case "hello":
        onHello(data);
        break;
      case "state":
        onState(data, text);
        break;
      case "progress":
        onProgress(data);
        break;
      case "ack":
        onReply(msg.id, true, data, text);
        break;
      case "command_error":
        onReply(msg.id, false, data, text);
        break;
      case "prompt_switched":
        if (data.generation >= S.generation) {
          addLog(`frame ${data.frame} (${seconds(data.video_frame)} s): prompt → “${data.new_prompt}”`);
        }
        break;
      case "generation_finished":
        if (data.generation >= S.generation) {
          addLog(`video ended (${data.reason}) at frame ${data.current_start_frame}`, data.reason === "error" ? "bad" : "");
        }
        break;
      case "error":
        setError("runner", `runner error (${data.code}): ${data.message}`);
        addLog(`runner error (${data.code}): ${data.message}`, "bad");
        break;
      case "queued": // a cluster: every worker is busy (docs/protocol.md, section 5.1)
        setStatus("queued", `queued: ${data.position} of ${data.queue_length}`);
        showBanner(
          `<strong>Every worker is busy</strong>: you are number ${escapeHtml(String(data.position))} ` +
            `in the queue (${escapeHtml(String(data.queue_length))} waiting). The video starts when a worker frees.`,
        );
        break;
      case "frames_dropped":
        S.droppedByRunner = typeof data.total === "number" ? data.total : S.droppedByRunner + (data.count || 0);
        el.dropped.textContent = String(S.droppedByRunner);
        break;
      default:
        break; // unknown types are ignored (forward compatibility)
    }
  }

  function onHello(data) {
    if (data.protocol_version !== PROTOCOL_VERSION) {
      S.incompatible = true;
      setStatus("incompatible", "incompatible runner");
      showBanner(
        `<strong>This page speaks protocol version ${PROTOCOL_VERSION}</strong>; the runner speaks ` +
          `version ${escapeHtml(String(data.protocol_version))}. Reload the page from that runner.`,
      );
      if (S.ws) S.ws.close(1000, "unsupported protocol version");
      return;
    }
    S.hello = data;
    S.attempt = 0;
    S.droppedByRunner = 0; // frames_dropped totals count from each connection
    el.dropped.textContent = "0";
    setStatus("connected", "connected");
    showBanner(null);
    clearInterval(S.countdownTimer);
    const name = data.preset ? `${data.model} (${data.preset})` : data.model;
    el.modelInfo.textContent = `${name} · ${data.width}×${data.height} · ${data.fps} fps`;
    if (typeof data.session_id === "string" && data.session_id) {
      // A cluster session: this page's address now joins it (share it with a viewer).
      sessionId = data.session_id;
      el.modelInfo.textContent += ` · session ${data.session_id}`;
      const here = new URL(window.location.href);
      here.searchParams.set("session", sessionId);
      window.history.replaceState(null, "", here.toString());
      // The page's own address co-directs; the viewer key joins to watch only (no command).
      if (data.role === "viewer") el.modelInfo.textContent += " · view only";
      if (typeof data.viewer_session_id === "string" && data.viewer_session_id) {
        here.searchParams.set("session", data.viewer_session_id);
        const link = document.createElement("a");
        link.id = "viewer-link";
        link.href = here.toString();
        link.textContent = "viewer link";
        el.modelInfo.append(" · ", link);
      }
    }
    sizeCanvas(data.width, data.height);
    addLog(`connected to ${data.model} (${data.width}×${data.height}, ${data.fps} fps)`);
  }

  function onState(data, text) {
    if (typeof data.generation !== "number" || data.generation < S.generation) return;
    if (data.generation !== S.generation) newGeneration(data.generation);
    S.state = data;
    S.csf = data.current_start_frame;
    S.videoFrame = data.video_frame;
    S.seedText = data.seed == null ? null : rawInteger(text, "seed") || String(data.seed);
    render();
  }

  function onProgress(data) {
    if (data.generation < S.generation) return;
    if (data.generation !== S.generation) newGeneration(data.generation);
    S.csf = data.current_start_frame;
    S.videoFrame = data.video_frame;
    renderCounters();
    renderTimeline();
  }

  function onReply(id, ok, data, text) {
    const pending = id == null ? undefined : S.pending.get(id);
    if (!pending) {
      if (!ok) {
        const what = data.command ? `${data.command} refused` : "a message was refused";
        setError("runner", `${what}: ${data.code}: ${data.reason}`);
        addLog(`${what}: ${data.code}: ${data.reason}`, "bad");
      }
      return;
    }
    S.pending.delete(id);
    clearTimeout(pending.timer);
    if (ok) pending.resolve({ data, text });
    else pending.reject({ code: data.code, reason: data.reason });
  }

  // Binary frame message (docs/protocol.md, section 4): validate, then queue it for drawing.
  function onBinary(buffer) {
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < FRAME_HEADER_SIZE) {
      return badFrame("too short");
    }
    const dv = new DataView(buffer);
    for (let i = 0; i < 4; i++) if (dv.getUint8(i) !== FRAME_MAGIC[i]) return badFrame("bad magic");
    const version = dv.getUint8(4);
    if (version !== 1) return badFrame(`unsupported frame version ${version}`);
    if (dv.getUint8(5) !== PIXEL_FORMAT_RGB24) return badFrame("unsupported pixel format");
    const headerSize = dv.getUint16(6, true);
    const f = {
      generation: dv.getUint32(8, true),
      videoFrame: dv.getUint32(12, true),
      blockStart: dv.getUint32(16, true),
      indexInBlock: dv.getUint16(20, true),
      framesInBlock: dv.getUint16(22, true),
      height: dv.getUint16(24, true),
      width: dv.getUint16(26, true),
      pixels: null,
    };
    if (headerSize < FRAME_HEADER_SIZE || buffer.byteLength !== headerSize + f.width * f.height * 3) {
      return badFrame("wrong size");
    }
    if (f.generation < S.generation) return; // stale: from before a reset
    if (f.generation !== S.generation) newGeneration(f.generation);
    f.bytes = f.width * f.height * 3;
    decode(f, buffer, headerSize);
    const now = performance.now();
    S.arrivals.push(now);
    while (S.arrivals.length && S.arrivals[0] < now - FPS_WINDOW_MS) S.arrivals.shift();
    S.queue.push(f);
    if (!el.smoothInput.checked) {
      drainQueue();
      return;
    }
    const limit = Math.max(
      1,
      Math.min(MAX_BUFFER_SECONDS * fps(), Math.floor(MAX_BUFFER_BYTES / Math.max(f.bytes, 1))),
    );
    if (S.queue.length > limit) {
      // Overfilled (a runner without pacing, or a hidden tab): skip the oldest frames.
      const skip = S.queue.length - limit;
      for (const old of S.queue.splice(0, skip)) discard(old);
      S.framesSkipped += skip;
      el.skipped.textContent = String(S.framesSkipped);
    }
    el.canvas.dataset.buffered = String(S.queue.length);
  }

  function badFrame(why) {
    addLog(`bad_frame: ${why}`, "bad");
  }

  function newGeneration(generation) {
    S.generation = generation;
    for (const old of S.queue) discard(old);
    S.queue = [];
    S.playClock = null;
    S.drawLog = [];
    S.framesShown = 0;
    S.lastVideoFrame = -1;
    S.lastBlock = -1;
    S.arrivals = [];
    S.framesSkipped = 0;
    el.skipped.textContent = "0";
    stopRecording();
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, el.canvas.width, el.canvas.height);
    updateCanvasData();
  }

  // ------------------------------------------------------------------------------------------
  // Drawing
  // ------------------------------------------------------------------------------------------
  function sizeCanvas(width, height) {
    if (el.canvas.width !== width || el.canvas.height !== height) {
      el.canvas.width = width;
      el.canvas.height = height;
      S.imageData = null;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, width, height);
    }
    el.canvas.classList.toggle("small-video", width < 320);
  }

  // The frame decoder (static/frames.js, a Web Worker) makes each frame's ImageBitmap, so the
  // main thread draws a frame with one drawImage and never touches its pixels. Where no worker
  // can start (a browser without workers), frames are converted here instead.
  let decoder = null;
  try {
    decoder = new Worker(new URL("static/frames.js", document.baseURI)); // beside app.js
    decoder.onmessage = (ev) => {
      const f = S.decoding.get(ev.data.id);
      S.decoding.delete(ev.data.id);
      if (!f) return;
      if (ev.data.error) {
        f.failed = true;
        badFrame(`cannot decode: ${ev.data.error}`);
      } else if (f.dropped) ev.data.bitmap.close();
      else f.bitmap = ev.data.bitmap;
      if (!el.smoothInput.checked) drainQueue();
    };
    decoder.onerror = () => {
      // The worker failed (or its script did not load): the frames in flight are lost (their
      // bytes went to it) and skipped; the next ones are converted on the main thread.
      decoder = null;
      for (const f of S.decoding.values()) f.failed = true;
      S.decoding.clear();
    };
  } catch (_) {
    decoder = null;
  }

  function decode(f, buffer, offset) {
    if (decoder) {
      f.bitmap = null;
      const id = ++S.decodeIds;
      S.decoding.set(id, f);
      decoder.postMessage({ id, buffer, offset, width: f.width, height: f.height }, [buffer]);
    } else {
      f.pixels = new Uint8Array(buffer, offset, f.bytes);
    }
  }

  const ready = (f) => f.pixels != null || f.bitmap != null || f.failed;

  function discard(f) {
    f.dropped = true;
    if (f.bitmap) f.bitmap.close();
    f.bitmap = null;
  }

  function draw(f) {
    sizeCanvas(f.width, f.height);
    if (f.failed) return;
    if (f.bitmap) {
      ctx.drawImage(f.bitmap, 0, 0);
      f.bitmap.close();
      f.bitmap = null;
    } else {
      // No decoder worker: the conversion runs here (only then).
      if (!S.imageData || S.imageData.width !== f.width || S.imageData.height !== f.height) {
        S.imageData = ctx.createImageData(f.width, f.height);
      }
      const out = new Uint32Array(S.imageData.data.buffer);
      const src = f.pixels;
      for (let i = 0, j = 0, n = out.length; j < n; i += 3, j++) {
        out[j] = 0xff000000 | (src[i + 2] << 16) | (src[i + 1] << 8) | src[i];
      }
      ctx.putImageData(S.imageData, 0, 0);
    }
    S.drawLog.push({ videoFrame: f.videoFrame, generation: f.generation, t: performance.now() });
    if (S.drawLog.length > DRAW_LOG) S.drawLog.splice(0, S.drawLog.length - DRAW_LOG);
    S.framesShown += 1;
    S.lastVideoFrame = f.videoFrame;
    S.lastBlock = f.blockStart;
    if (!S.recording) startRecording();
    updateCanvasData();
  }

  function updateCanvasData() {
    el.canvas.dataset.framesShown = String(S.framesShown);
    el.canvas.dataset.lastVideoFrame = String(S.lastVideoFrame);
    el.canvas.dataset.lastBlock = String(S.lastBlock);
    el.canvas.dataset.generation = String(S.generation);
    el.screenNote.hidden = S.framesShown > 0;
    if (S.framesShown === 0) {
      el.screenNote.textContent =
        phase() === "running" ? "generating the first block…" : "schedule a prompt at frame 0, then press start";
    }
    el.frameDetail.textContent =
      S.lastVideoFrame >= 0 ? `showing video frame ${S.lastVideoFrame} (${seconds(S.lastVideoFrame)} s)` : "";
  }

  // Not at video speed: show the newest decoded frame at once (older ones are skipped over;
  // frames still being decoded stay queued).
  function drainQueue() {
    let last = -1;
    for (let i = 0; i < S.queue.length && ready(S.queue[i]); i++) last = i;
    if (last < 0) return;
    const shown = S.queue.splice(0, last + 1);
    for (const old of shown.slice(0, -1)) discard(old);
    draw(shown[shown.length - 1]);
  }

  // Frames arrive a block at a time; "play at video speed" plays them from the buffer, every
  // one, one per 1/fps s (62.5 ms at 16 fps). Frames are due on a clock that advances by exactly
  // one interval per frame, so the rate holds on average whatever the display's refresh rate. A
  // frame is never skipped to catch up: when the page falls behind (a busy or hidden tab) or the
  // buffer runs dry, playback goes on from the next frame.
  function tick(now) {
    requestAnimationFrame(tick);
    if (!el.smoothInput.checked) {
      drainQueue();
      return;
    }
    if (!S.queue.length) {
      if (S.playClock !== null && now > S.playClock) S.playClock = null; // ran dry: restart on arrival
      return;
    }
    const interval = 1000 / fps();
    if (S.playClock === null) S.playClock = now;
    if (now + 4 < S.playClock) return; // not due yet (4 ms: within a refresh of the due time)
    if (!ready(S.queue[0])) return; // still decoding (a few ms): drawn on the next refresh
    draw(S.queue.shift());
    el.canvas.dataset.buffered = String(S.queue.length);
    S.playClock += interval;
    if (S.playClock < now - interval) S.playClock = now; // fell behind: go on from now, skip nothing
  }

  // ------------------------------------------------------------------------------------------
  // Recording what was shown (MediaRecorder on the canvas stream -> WebM)
  // ------------------------------------------------------------------------------------------
  function recorderMime() {
    if (!window.MediaRecorder) return null;
    for (const mime of ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"]) {
      if (MediaRecorder.isTypeSupported(mime)) return mime;
    }
    return "";
  }

  function startRecording() {
    const mime = recorderMime();
    if (mime === null || !el.canvas.captureStream) return;
    try {
      const stream = el.canvas.captureStream();
      const recorder = new MediaRecorder(stream, mime ? { mimeType: mime, videoBitsPerSecond: 4000000 } : {});
      const rec = { recorder, chunks: [], mime: mime || "video/webm", generation: S.generation, waiters: [] };
      recorder.ondataavailable = (ev) => {
        if (ev.data && ev.data.size) rec.chunks.push(ev.data);
        const waiters = rec.waiters;
        rec.waiters = [];
        for (const w of waiters) w();
      };
      recorder.start(1000);
      S.recording = rec;
    } catch (err) {
      S.recording = { recorder: null, chunks: [], error: String(err) };
    }
  }

  function stopRecording() {
    const rec = S.recording;
    S.recording = null;
    if (!rec || !rec.recorder) return;
    if (rec.recorder.state !== "inactive") rec.recorder.stop();
    S.lastRecording = rec;
  }

  async function download() {
    setError("download", "");
    const rec = S.recording && S.recording.recorder ? S.recording : S.lastRecording;
    if (!rec) {
      const why = S.recording && S.recording.error ? S.recording.error : "nothing was shown yet";
      setError("download", recorderMime() === null ? "this browser cannot record video (no MediaRecorder)" : why);
      return;
    }
    if (rec.recorder && rec.recorder.state === "recording") {
      await new Promise((resolve) => {
        rec.waiters.push(resolve);
        rec.recorder.requestData();
        setTimeout(resolve, 1500);
      });
    }
    if (!rec.chunks.length) {
      setError("download", "the recording is still empty: try again in a second");
      return;
    }
    const blob = new Blob(rec.chunks, { type: rec.mime.split(";")[0] });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `longlive-generation${rec.generation}.webm`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  // ------------------------------------------------------------------------------------------
  // Commands
  // ------------------------------------------------------------------------------------------
  // Send a command with an id; its reply settles the promise. `errorKey` names the place where a
  // refusal is shown (next to the control that sent it). `seedDigits` puts an exact 64-bit seed in.
  function send(type, data, errorKey, seedDigits) {
    setError(errorKey, "");
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN || !S.hello) {
      const err = { code: "not_connected", reason: "not connected to the runner" };
      setError(errorKey, `${err.reason}`);
      return Promise.reject(err);
    }
    const id = `w${S.nextId++}`;
    let text = JSON.stringify({ type, data: data || {}, id });
    if (seedDigits != null) text = text.replace('"seed":"__SEED__"', `"seed":${seedDigits}`);
    const promise = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        S.pending.delete(id);
        reject({ code: "timeout", reason: "no reply from the runner" });
      }, COMMAND_TIMEOUT_MS);
      S.pending.set(id, { type, errorKey, resolve, reject, timer });
    });
    S.ws.send(text);
    return promise.catch((err) => {
      setError(errorKey, `${err.code}: ${err.reason}`);
      throw err;
    });
  }

  const ignore = () => {};

  function onSchedule() {
    setError("schedule", "");
    el.scheduleHint.textContent = "";
    el.scheduleWarning.textContent = "";
    el.scheduleWarning.hidden = true;
    const prompt = el.promptInput.value;
    if (!prompt.trim()) {
      setError("schedule", "type a prompt first");
      return;
    }
    const limit = (S.hello && S.hello.max_prompt_chars) || 2000;
    if ([...prompt].length > limit) {
      setError("schedule", `the prompt is longer than ${limit} characters`);
      return;
    }
    let timestamp;
    const frameText = el.timestampInput.value.trim();
    const secondsText = el.secondsInput.value.trim();
    if (frameText !== "") {
      timestamp = Number(frameText);
      if (!Number.isInteger(timestamp) || timestamp < 0 || timestamp > maxFrames()) {
        setError("schedule", `the frame must be an integer from 0 to ${maxFrames()}`);
        return;
      }
    } else if (secondsText !== "") {
      const t = Number(secondsText);
      if (!Number.isFinite(t) || t < 0) {
        setError("schedule", "the time must be a number of seconds >= 0");
        return;
      }
      timestamp = latentOfVideoFrame(Math.floor(t * fps() + 1e-9));
      if (timestamp > maxFrames()) {
        setError("schedule", `${t} s is past the end of the video (frame ${maxFrames()})`);
        return;
      }
    } else {
      timestamp = defaultTimestamp();
    }
    send("schedule_prompt", { new_prompt: prompt, timestamp }, "schedule")
      .then(({ data }) => {
        const eff = data.effective_frame;
        let hint = `scheduled at frame ${data.timestamp}; takes effect at frame ${eff} (${seconds(firstVideoFrame(eff))} s)`;
        if (data.replaced_prompt != null) hint += `, replacing “${data.replaced_prompt}”`;
        const problems = [];
        for (const w of data.warnings || []) {
          // Where the prompt went is a hint; what the video will not show is a warning.
          if (w.code === "rekeyed" || w.code === "superseded") hint += ` · ${w.code}: ${w.message}`;
          else problems.push(`${w.code}: ${w.message}`);
        }
        el.scheduleHint.textContent = hint;
        el.scheduleWarning.textContent = problems.join("\n");
        el.scheduleWarning.hidden = problems.length === 0;
        for (const text of problems) addLog(`warning: “${prompt}”: ${text}`, "warn");
        el.promptInput.value = "";
        el.timestampInput.value = "";
        el.secondsInput.value = "";
      })
      .catch(ignore);
  }

  function onStart() {
    setError("seed", "");
    setError("start", "");
    const seedText = el.seedInput.value.trim();
    if (seedText === "") {
      send("start", {}, "start").catch(ignore);
      return;
    }
    if (!/^\d{1,19}$/.test(seedText) || BigInt(seedText) > MAX_SEED) {
      setError("seed", "the seed must be an integer from 0 to 2^63-1");
      return;
    }
    const digits = BigInt(seedText).toString();
    send("start", { seed: "__SEED__" }, "start", digits).catch(ignore);
  }

  function onRemove(timestamp) {
    const key = `prompt-${timestamp}`;
    send("remove_prompt", { timestamp }, key).catch(ignore);
  }

  // ------------------------------------------------------------------------------------------
  // Rendering
  // ------------------------------------------------------------------------------------------
  function escapeHtml(s) {
    return s.replace(
      /[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
    );
  }

  // The digits of an integer field as written in the JSON text (JSON.parse rounds past 2**53).
  function rawInteger(text, key) {
    const m = new RegExp(`"${key}"\\s*:\\s*(\\d+)`).exec(text || "");
    return m ? m[1] : null;
  }

  function errorElement(key) {
    if (key === "runner") return el.runnerError;
    return document.getElementById(`${key}-error`);
  }

  function setError(key, text) {
    if (!key) return;
    if (text) S.errors.set(key, text);
    else S.errors.delete(key);
    const target = errorElement(key);
    if (target) target.textContent = text || "";
  }

  function addLog(text, cls) {
    const li = document.createElement("li");
    const time = new Date().toLocaleTimeString();
    li.textContent = `${time}  ${text}`;
    if (cls) li.className = cls;
    el.log.prepend(li);
    while (el.log.children.length > LOG_LINES) el.log.lastChild.remove();
  }

  function render() {
    renderCounters();
    renderTimeline();
    renderHint();
    updateControls();
    updateCanvasData();
  }

  function renderCounters() {
    el.frameCounter.textContent = String(S.csf);
    el.frameCounter.dataset.currentStartFrame = String(S.csf);
    el.frameCounter.title = `current_start_frame (latent); ${S.videoFrame} video frames generated`;
    const st = S.state;
    const p = phase();
    el.phase.textContent = p === "finished" ? `finished (${st.finished})` : p;
    el.phase.dataset.phase = p;
    // The generation (the runner's count of resets) is not shown: it only tells frames of an
    // earlier video from this one's. It stays on the canvas as data-generation.
    el.seedInUse.textContent = S.seedText == null ? "–" : S.seedText;
    el.currentPrompt.textContent = st && st.current_prompt != null ? st.current_prompt : "none yet";
    el.currentPrompt.classList.toggle("muted", !(st && st.current_prompt != null));
  }

  // Two rates, both over the last FPS_WINDOW_MS: "playing" counts the frames drawn, "receiving"
  // the frames that arrived. At the start of a video the runner sends its lead (up to 2 blocks)
  // ahead of playback to fill the buffer, so frames arrive faster than they play; playback holds
  // the video's own rate (16 fps) throughout.
  function rateOver(times, now, at = (t) => t) {
    let n = 0;
    let first = now;
    for (let i = times.length - 1; i >= 0 && at(times[i]) >= now - FPS_WINDOW_MS; i--) {
      n += 1;
      first = at(times[i]);
    }
    if (!n) return null;
    const span = Math.max(now - first, 1000 / fps());
    return (n * 1000) / Math.min(Math.max(span, 250), FPS_WINDOW_MS);
  }

  function showRate(target, rate, what) {
    const window_s = FPS_WINDOW_MS / 1000;
    target.title = `${what} per second over the last ${window_s} s (the video plays at ${fps()} fps)`;
    if (rate === null) {
      target.textContent = phase() === "running" ? "0.0" : "–";
      target.dataset.fps = "0";
      return;
    }
    target.textContent = rate.toFixed(1);
    target.dataset.fps = rate.toFixed(2);
  }

  function renderFps() {
    const now = performance.now();
    while (S.arrivals.length && S.arrivals[0] < now - FPS_WINDOW_MS) S.arrivals.shift();
    const playing = rateOver(S.drawLog, now, (d) => d.t);
    showRate(el.fps, playing, "frames drawn on the canvas");
    el.fps.style.color = playing !== null && playing >= fps() * 0.95 ? "var(--ok)" : "";
    showRate(el.receiveFps, rateOver(S.arrivals, now), "frames received from the runner");
  }

  // The timeline is laid out in latent frames: every element sits at `--s`/`--f` (and `--w`) over
  // the timeline's `--end` (style.css), so the timeline growing is one CSS variable and a few new
  // blocks. A `progress` only moves the playhead and re-marks the blocks; the markers and the
  // prompt list are rebuilt when what they show changes (a `state` with another schedule).
  const TL = { end: -1, step: 0, tickEvery: 0, blocks: [], ticks: [], key: null, tags: [], width: 0 };
  const tlBlocks = document.createElement("div");
  const tlTicks = document.createElement("div");
  const tlMarkers = document.createElement("div");
  const tlPlayhead = document.createElement("div");
  for (const box of [tlBlocks, tlTicks, tlMarkers]) box.className = "layer";
  tlPlayhead.className = "playhead";
  el.timeline.replaceChildren(tlBlocks, tlTicks, tlPlayhead, tlMarkers);

  function layoutTimeline(end, step) {
    if (step !== TL.step) {
      tlBlocks.replaceChildren();
      TL.blocks = [];
      TL.step = step;
    }
    if (end === TL.end) return;
    TL.end = end;
    el.timeline.style.setProperty("--end", String(end));
    layoutTags();
    const count = Math.ceil(end / step);
    while (TL.blocks.length > count) TL.blocks.pop().remove();
    for (let b = TL.blocks.length; b < count; b++) {
      const div = document.createElement("div");
      div.className = "block";
      div.dataset.start = String(b * step);
      div.style.setProperty("--s", String(b * step));
      tlBlocks.append(div);
      TL.blocks.push(div);
    }
    for (let b = 0; b < count; b++) {
      const s = b * step;
      const w = Math.min(step, end - s);
      const div = TL.blocks[b];
      if (div.dataset.w !== String(w)) {
        div.dataset.w = String(w);
        div.style.setProperty("--w", String(w));
        div.title = `block ${s}–${s + w - 1} (${seconds(firstVideoFrame(s))} s)`;
      }
    }
    const every = Math.max(1, Math.floor(end / step / 8)) * step;
    if (every !== TL.tickEvery) {
      tlTicks.replaceChildren();
      TL.ticks = [];
      TL.tickEvery = every;
    }
    while (TL.ticks.length && TL.ticks[TL.ticks.length - 1].s >= end) TL.ticks.pop().div.remove();
    for (let s = TL.ticks.length * every; s < end; s += every) {
      const div = document.createElement("div");
      div.className = "axis";
      div.style.setProperty("--s", String(s));
      div.textContent = String(s);
      tlTicks.append(div);
      TL.ticks.push({ s, div });
    }
  }

  // The prompts' labels on the timeline: each starts just right of its marker, in one of
  // TAG_LANES rows, so that labels of nearby prompts never overlap. A label goes in the first row
  // where it fits whole; where none has room, the row whose last label started earliest takes it
  // and that label is cut short (ellipsis) at the new one, or hidden when too little would remain
  // (the prompt list below has every text). Widths are measured when the markers are rebuilt; a
  // progress or a longer timeline only recomputes positions (no layout read).
  const TAG_LANES = 3;
  const TAG_GAP = 6; // px between labels in a row
  const TAG_OFFSET = 5; // px from the marker to its label (style.css: .marker .tag left)
  const TAG_MAX = 220; // px (style.css: .marker .tag max-width)
  const TAG_MIN = 24; // px: a label cut shorter than this is hidden

  function measureTags(markers) {
    TL.tags = markers.map((m) => {
      const tag = m.firstChild;
      return { f: Number(m.dataset.timestamp), tag, natural: Math.min(tag.offsetWidth, TAG_MAX) };
    });
    if (!TL.width) TL.width = el.timeline.clientWidth;
    layoutTags();
  }

  function layoutTags() {
    const width = TL.width;
    if (!width || TL.end <= 0) return;
    const last = new Array(TAG_LANES).fill(null); // the last label placed in each row
    for (const t of TL.tags) {
      t.x = (width * t.f) / TL.end + TAG_OFFSET;
      t.room = Math.max(0, Math.min(t.natural, width - t.x - 2));
      let lane = last.findIndex((p) => p === null || p.x + p.room + TAG_GAP <= t.x);
      if (lane < 0) {
        lane = 0;
        for (let i = 1; i < TAG_LANES; i++) if (last[i].x < last[lane].x) lane = i;
        const p = last[lane];
        p.room = Math.max(0, t.x - TAG_GAP - p.x);
      }
      t.lane = lane;
      last[lane] = t;
    }
    for (const t of TL.tags) {
      const shown = t.room >= TAG_MIN;
      t.tag.hidden = !shown;
      t.tag.style.setProperty("--lane", String(t.lane));
      t.tag.style.maxWidth = `${Math.floor(t.room)}px`;
      t.tag.dataset.lane = String(t.lane);
    }
  }

  if (window.ResizeObserver) {
    new ResizeObserver((entries) => {
      const width = entries[entries.length - 1].contentRect.width;
      if (width !== TL.width) {
        TL.width = width;
        layoutTags();
      }
    }).observe(el.timeline);
  }

  function renderTimeline() {
    const st = S.state;
    const prompts = st
      ? Object.entries(st.scheduled_prompts || {})
          .map(([k, v]) => [Number(k), v])
          .sort((a, b) => a[0] - b[0])
      : [];
    const step = fpb();
    const end = timelineEnd(prompts.length ? prompts[prompts.length - 1][0] : 0);
    const running = phase() === "running";
    const inForce = st && st.in_force != null ? st.in_force : null; // the prompt of the last block
    const decided = lastDecided();

    layoutTimeline(end, step);
    for (let b = 0; b < TL.blocks.length; b++) {
      const s = b * step;
      const cls = s + step <= S.csf ? "block done" : running && s === S.csf ? "block next" : "block";
      if (TL.blocks[b].className !== cls) TL.blocks[b].className = cls;
    }
    tlPlayhead.style.setProperty("--f", String(Math.min(S.csf, end)));
    tlPlayhead.title = `current_start_frame ${S.csf}`;
    el.timeline.dataset.end = String(end);

    const key = JSON.stringify([prompts, inForce, decided, step, fps(), tc()]);
    if (key === TL.key) return;
    TL.key = key;
    const markers = [];
    for (const [ts, text] of prompts) {
      const m = document.createElement("div");
      m.className = "marker";
      if (ts === inForce) m.classList.add("in-force");
      if (ts <= decided) m.classList.add("applied");
      m.dataset.timestamp = String(ts);
      m.style.setProperty("--f", String(ts));
      m.title = `${ts}: ${text}`;
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = text;
      m.append(tag);
      markers.push(m);
    }
    tlMarkers.replaceChildren(...markers);
    measureTags(markers);
    el.timeline.dataset.prompts = String(prompts.length);
    el.timeline.dataset.inForce = inForce === null ? "" : String(inForce);

    const items = [];
    for (const [ts, text] of prompts) {
      const li = document.createElement("li");
      li.dataset.timestamp = String(ts);
      li.dataset.testid = `prompt-${ts}`;
      if (ts === inForce) li.classList.add("in-force");
      if (ts <= decided) li.classList.add("applied");
      const eff = blockBoundary(ts);
      const at = document.createElement("span");
      at.className = "at";
      at.textContent = `frame ${ts}` + (eff !== ts ? ` → ${eff}` : "") + ` · ${seconds(firstVideoFrame(eff))} s`;
      const body = document.createElement("span");
      body.className = "text";
      body.textContent = text;
      const btn = document.createElement("button");
      btn.className = "small remove-btn";
      btn.textContent = "remove";
      btn.dataset.testid = `remove-prompt-${ts}`;
      btn.title = ts <= decided ? "already applied: the runner will refuse" : "remove this prompt";
      btn.addEventListener("click", () => onRemove(ts));
      const err = document.createElement("span");
      err.className = "error";
      err.id = `prompt-${ts}-error`;
      err.dataset.testid = `prompt-${ts}-error`;
      err.textContent = S.errors.get(`prompt-${ts}`) || "";
      li.append(at, body, btn, err);
      items.push(li);
    }
    el.promptList.replaceChildren(...items);
  }

  function renderHint() {
    const next = defaultTimestamp();
    el.timestampInput.placeholder = `next: ${next}`;
    el.timestampInput.title = `latent frame (blocks of ${fpb()}); empty: ${next}, the next block that can still take it`;
  }

  function updateControls() {
    const connected = S.hello !== null && S.ws !== null;
    const p = phase();
    el.scheduleBtn.disabled = !connected;
    el.startBtn.disabled = !connected || p !== "idle";
    el.pauseBtn.disabled = !connected || p !== "running";
    el.resumeBtn.disabled = !connected || p !== "paused";
    el.resetBtn.disabled = !connected;
  }

  // ------------------------------------------------------------------------------------------
  // Wiring
  // ------------------------------------------------------------------------------------------
  el.scheduleBtn.addEventListener("click", onSchedule);
  el.promptInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      onSchedule();
    }
  });
  for (const input of [el.timestampInput, el.secondsInput]) {
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") onSchedule();
    });
  }
  el.timestampInput.addEventListener("input", () => {
    if (el.timestampInput.value !== "") el.secondsInput.value = "";
  });
  el.secondsInput.addEventListener("input", () => {
    if (el.secondsInput.value !== "") el.timestampInput.value = "";
  });
  el.startBtn.addEventListener("click", onStart);
  el.pauseBtn.addEventListener("click", () => send("pause", {}, "pause").catch(ignore));
  el.resumeBtn.addEventListener("click", () => send("resume", {}, "resume").catch(ignore));
  el.resetBtn.addEventListener("click", () => {
    setError("runner", "");
    send("reset", {}, "reset").catch(ignore);
  });
  el.downloadBtn.addEventListener("click", () => download());
  el.timeline.addEventListener("click", (ev) => {
    const rect = el.timeline.getBoundingClientRect();
    const end = Number(el.timeline.dataset.end || 48);
    const f = Math.floor((((ev.clientX - rect.left) / rect.width) * end) / fpb()) * fpb();
    el.timestampInput.value = String(Math.max(0, Math.min(f, maxFrames())));
    el.secondsInput.value = "";
    el.promptInput.focus();
  });

  setInterval(renderFps, 500);
  requestAnimationFrame(tick);
  window.longliveLiveView = { state: S }; // for debugging from the console
  render();
  renderFps(); // the rates' titles from the start (then every 500 ms)
  connect();
})();
