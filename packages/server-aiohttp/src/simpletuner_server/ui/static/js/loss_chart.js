// The job page's chart (uPlot, vendored): raw loss, its exponential moving average, the learning rate on a
// second axis, and evaluation metrics as points. Live points are batched into one redraw per frame.

const COLORS = { raw: "rgba(47,111,222,.25)", smooth: "#2f6fde", lr: "#d9822b", metric: "#1f8a4c" };

function ema(values, alpha) {
  const out = new Array(values.length);
  let acc = null, weight = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || !isFinite(v)) { out[i] = acc === null ? null : acc / weight; continue; }
    acc = acc === null ? v * (1 - alpha) : acc * alpha + v * (1 - alpha);
    weight = weight === 0 ? 1 - alpha : weight * alpha + (1 - alpha);
    out[i] = acc / weight; // bias-corrected, so the start is not pulled towards 0
  }
  return out;
}

export class LossChart {
  constructor(el, countEl) {
    this.el = el;
    this.countEl = countEl;
    this.x = []; this.loss = []; this.lr = [];
    this.metrics = new Map(); // name -> array aligned with x
    this.alpha = Number(document.getElementById("smoothing").value);
    this.log = false;
    this.plot = null;
    this.pending = false;
    document.getElementById("smoothing").addEventListener("input", (e) => {
      this.alpha = Number(e.target.value);
      document.getElementById("smoothing-value").textContent = e.target.value;
      this.redraw();
    });
    document.getElementById("log-scale").addEventListener("change", (e) => { this.log = e.target.checked; this.build(); });
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(el);
  }

  load(m) {
    this.x = m.series.step.slice();
    this.loss = m.series.loss.slice();
    this.lr = m.series.lr.slice();
    for (const [name, s] of Object.entries(m.metrics || {})) {
      const col = new Array(this.x.length).fill(null);
      s.step.forEach((step, i) => { const at = this.indexOf(step); if (at >= 0) col[at] = s.value[i]; });
      this.metrics.set(name, col);
    }
    this.build();
  }

  indexOf(step) {
    for (let i = this.x.length - 1; i >= 0; i--) if (this.x[i] <= step) return i;
    return -1;
  }

  push(step, loss, lr) {
    if (step === undefined || step === null) return;
    if (this.x.length && step <= this.x[this.x.length - 1]) return; // replayed or resumed: already plotted
    this.x.push(step); this.loss.push(loss ?? null); this.lr.push(lr ?? null);
    for (const col of this.metrics.values()) col.push(null);
    this.schedule();
  }

  pushMetric(name, step, value) {
    if (!this.metrics.has(name)) {
      this.metrics.set(name, new Array(this.x.length).fill(null));
      this.build();
    }
    const at = this.indexOf(step);
    if (at >= 0) { this.metrics.get(name)[at] = value; this.schedule(); }
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.redraw(); });
  }

  data() {
    return [this.x, this.loss, ema(this.loss, this.alpha), this.lr, ...this.metrics.values()];
  }

  size() {
    return { width: Math.max(280, this.el.clientWidth), height: this.el.clientWidth < 500 ? 220 : 300 };
  }

  build() {
    if (this.plot) this.plot.destroy();
    const metricSeries = [...this.metrics.keys()].map((name) => ({
      label: name, stroke: COLORS.metric, width: 0, paths: () => null, spanGaps: true,
      points: { show: true, size: 7, fill: COLORS.metric } }));
    const opts = {
      ...this.size(),
      scales: { x: { time: false }, y: { distr: this.log ? 3 : 1 }, lr: { distr: 1 } },
      series: [
        { label: "step" },
        { label: "loss", stroke: COLORS.raw, width: 1 },
        { label: "loss (smoothed)", stroke: COLORS.smooth, width: 2 },
        { label: "learning rate", stroke: COLORS.lr, width: 1.5, scale: "lr" },
        ...metricSeries,
      ],
      axes: [
        { label: "step" },
        { label: "loss", size: 60 },
        { label: "learning rate", scale: "lr", side: 1, grid: { show: false }, size: 70,
          values: (u, ticks) => ticks.map((t) => (t === 0 ? "0" : t.toExponential(1))) },
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
    this.plot = new window.uPlot(opts, this.data(), this.el);
    this.count();
  }

  redraw() {
    if (!this.plot) return this.build();
    this.plot.setData(this.data());
    this.count();
  }

  count() {
    if (this.countEl) this.countEl.textContent = `${this.x.length} points`;
    this.el.dataset.points = String(this.x.length);
  }
}
