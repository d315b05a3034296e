// A tick-line price chart on a <canvas>, from the live ticks seen since the page opened (the
// API has no candles). Plotting needs positions, not money: the prices are turned into
// Numbers here only to place points on the screen.

export function drawTicks(canvas, ticks) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = style.color;
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
