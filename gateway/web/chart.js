// Price charts on a <canvas>: candles from the API, or a tick line from the live ticks seen
// since the page opened while there are none. Plotting needs positions, not money: the
// prices are turned into Numbers here only to place points on the screen.

function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = getComputedStyle(canvas).color;
  return { ctx, width, height, style: getComputedStyle(canvas) };
}

/** Candles, oldest first ({startTime, open, high, low, close} with exact decimal texts).
 * A candle that closed up has a hollow body, one that closed down a filled one: the shape
 * says it, not only the colour. */
export function drawCandles(canvas, candles) {
  const { ctx, width, height, style } = prepare(canvas);
  canvas.dataset.candles = String(candles.length);
  if (!candles.length) {
    ctx.fillText("No trades in this interval yet…", 8, height / 2);
    return;
  }
  const low = Math.min(...candles.map((c) => Number(c.low)));
  let high = Math.max(...candles.map((c) => Number(c.high)));
  const floor = high === low ? low - 1 : low;
  if (high === low) high += 1;
  const left = 4;
  const right = width - 64;
  const top = 8;
  const bottom = height - 8;
  const slot = (right - left) / Math.max(candles.length, 20);
  const y = (p) => bottom - ((Number(p) - floor) / (high - floor)) * (bottom - top);
  ctx.fillText(String(candles.reduce((a, b) => (Number(b.high) > Number(a.high) ? b : a)).high), right + 6, top + 10);
  ctx.fillText(String(candles.reduce((a, b) => (Number(b.low) < Number(a.low) ? b : a)).low), right + 6, bottom);
  const up = style.getPropertyValue("--up").trim() || "#1a7f37";
  const down = style.getPropertyValue("--down").trim() || "#c01c28";
  candles.forEach((c, i) => {
    const x = left + slot * i + slot / 2;
    const rising = Number(c.close) >= Number(c.open);
    ctx.strokeStyle = rising ? up : down;
    ctx.fillStyle = rising ? up : down;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, y(c.high));
    ctx.lineTo(x, y(c.low));
    ctx.stroke();
    const body = Math.max(1, slot * 0.6);
    const topY = Math.min(y(c.open), y(c.close));
    const h = Math.max(1, Math.abs(y(c.open) - y(c.close)));
    if (rising) {
      ctx.clearRect(x - body / 2, topY, body, h);
      ctx.strokeRect(x - body / 2, topY, body, h);
    } else ctx.fillRect(x - body / 2, topY, body, h);
  });
}

export function drawTicks(canvas, ticks) {
  const { ctx, width, height, style } = prepare(canvas);
  if (ticks.length < 2) {
    ctx.fillText("Waiting for price ticks…", 8, height / 2);
    return;
  }
  const points = ticks.map((tick) => [tick.t, Number(tick.p)]);
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  let low = Math.min(...points.map((p) => p[1]));
  let high = Math.max(...points.map((p) => p[1]));
  if (high === low) {
    high += 1;
    low -= 1;
  }
  const left = 4;
  const right = width - 64;
  const top = 8;
  const bottom = height - 8;
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (right - left);
  const y = (p) => bottom - ((p - low) / (high - low)) * (bottom - top);
  ctx.strokeStyle = style.getPropertyValue("--grid").trim() || "#ccc";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(right, top);
  ctx.moveTo(left, bottom);
  ctx.lineTo(right, bottom);
  ctx.stroke();
  ctx.fillText(ticks.reduce((a, b) => (Number(b.p) > Number(a.p) ? b : a)).p, right + 6, top + 10);
  ctx.fillText(ticks.reduce((a, b) => (Number(b.p) < Number(a.p) ? b : a)).p, right + 6, bottom);
  ctx.strokeStyle = style.getPropertyValue("--line").trim() || "#1a5fb4";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach(([t, p], i) => {
    // A step line: a price holds until the next tick.
    if (i === 0) ctx.moveTo(x(t), y(p));
    else {
      ctx.lineTo(x(t), y(points[i - 1][1]));
      ctx.lineTo(x(t), y(p));
    }
  });
  ctx.stroke();
}
