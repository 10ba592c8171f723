// LongLive live view: the frame decoder, a Web Worker (started by app.js). It turns a binary
// frame's RGB24 pixels into an ImageBitmap the page draws with one drawImage, so that the
// per-pixel work (RGB -> RGBA) never runs on the page's main thread.
"use strict";

// Little-endian RGBA as one 32-bit word a pixel: A << 24 | B << 16 | G << 8 | R.
self.onmessage = async (ev) => {
  const { id, buffer, offset, width, height } = ev.data;
  const n = width * height;
  const src = new Uint8Array(buffer, offset, n * 3);
  const rgba = new Uint8ClampedArray(n * 4);
  const out = new Uint32Array(rgba.buffer);
  for (let i = 0, j = 0; j < n; i += 3, j++) {
    out[j] = 0xff000000 | (src[i + 2] << 16) | (src[i + 1] << 8) | src[i];
  }
  try {
    const bitmap = await createImageBitmap(new ImageData(rgba, width, height));
    self.postMessage({ id, bitmap }, [bitmap]);
  } catch (err) {
    self.postMessage({ id, error: String(err) });
  }
};
