// The reward/KL frontier figure as a hand-written SVG, gold reward on y, KL to the reference on x:
// frontierSvg draws one line per run through its evaluations (step 0 is the reference at KL 0);
// methodsFrontierSvg, the DPO paper's Figure 2, every checkpoint of every run as a dot, one colour
// per method, and each method's frontier (its best reward at each KL) as a line.
import { refuseUnknownKeys } from './options.js';

export interface FrontierPoint {
  kl: number;
  reward: number;
  step: number;
}

export interface FrontierSeries {
  label: string;
  /** Points in training order; `step` labels the last one. */
  points: FrontierPoint[];
}

/** A method: its runs (one per setting), drawn in one colour. */
export interface MethodSeries {
  label: string;
  runs: FrontierSeries[];
}

export interface FrontierPlotOptions {
  title?: string;
  subtitle?: string;
  /** The reference model's gold reward: a dashed line across the plot. */
  referenceReward?: number;
  width?: number;
  height?: number;
}

// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies)
const COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

function formatTick(v: number): string {
  return Number(v.toPrecision(6)).toString();
}

const fmt = (v: number) => Number(v.toFixed(2)).toString();

const PLOT_OPTION_KEYS = Object.keys({ title: 1, subtitle: 1, referenceReward: 1, width: 1, height: 1 } satisfies Record<keyof FrontierPlotOptions, 1>);

const finitePoints = (points: readonly FrontierPoint[]) => points.filter((p) => Number.isFinite(p.kl) && Number.isFinite(p.reward));

/**
 * The points no other point beats: none has a KL as low (or lower) and a reward as high (or
 * higher). Sorted by KL; ties in KL keep the higher reward.
 */
export function paretoFrontier<P extends { kl: number; reward: number }>(points: readonly P[]): P[] {
  const sorted = points.filter((p) => Number.isFinite(p.kl) && Number.isFinite(p.reward)).sort((a, b) => a.kl - b.kl || b.reward - a.reward);
  const frontier: P[] = [];
  for (const p of sorted) if (frontier.length === 0 || p.reward > frontier[frontier.length - 1]!.reward) frontier.push(p);
  return frontier;
}

interface Frame {
  out: string[];
  X(kl: number): number;
  Y(reward: number): number;
  left: number;
  top: number;
}

/** The SVG's head, titles, axes, grid and reference line, scaled to hold `all`. */
function drawFrame(all: FrontierPoint[], options: FrontierPlotOptions): Frame {
  const width = options.width ?? 760;
  const height = options.height ?? 500;
  const m = { left: 74, right: 28, top: options.subtitle ? 70 : 52, bottom: 62 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;


  const rewards = all.map((p) => p.reward).concat(options.referenceReward !== undefined ? [options.referenceReward] : []);
  let xLo = Math.min(0, ...all.map((p) => p.kl));
  let xHi = Math.max(...all.map((p) => p.kl), xLo + 1e-3);
  let yLo = Math.min(...rewards);
  let yHi = Math.max(...rewards);
  if (!Number.isFinite(yLo) || !Number.isFinite(yHi)) (yLo = 0), (yHi = 1);
  if (yHi - yLo < 1e-3) (yLo -= 0.5), (yHi += 0.5);
  const xPad = (xHi - xLo) * 0.04, yPad = (yHi - yLo) * 0.08;
  xHi += xPad;
  xLo -= xLo < 0 ? xPad : 0;
  yLo -= yPad;
  yHi += yPad;
  const xTicks = niceTicks(xLo, xHi);
  const yTicks = niceTicks(yLo, yHi);
  xLo = Math.min(xLo, xTicks[0]!);
  xHi = Math.max(xHi, xTicks[xTicks.length - 1]!);
  yLo = Math.min(yLo, yTicks[0]!);
  yHi = Math.max(yHi, yTicks[yTicks.length - 1]!);
  const X = (kl: number) => m.left + ((kl - xLo) / (xHi - xLo)) * plotW;
  const Y = (r: number) => m.top + plotH - ((r - yLo) / (yHi - yLo)) * plotH;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
  );
  if (options.title) out.push(`<text x="${m.left}" y="26" font-size="16" font-weight="bold" fill="#222">${escapeXml(options.title)}</text>`);
  if (options.subtitle) out.push(`<text x="${m.left}" y="46" font-size="12" fill="#555">${escapeXml(options.subtitle)}</text>`);

  // grid and ticks
  out.push('<g stroke="#e6e6e6" stroke-width="1">');
  for (const t of xTicks) out.push(`<line x1="${px(X(t))}" y1="${m.top}" x2="${px(X(t))}" y2="${m.top + plotH}"/>`);
  for (const t of yTicks) out.push(`<line x1="${m.left}" y1="${px(Y(t))}" x2="${m.left + plotW}" y2="${px(Y(t))}"/>`);
  out.push('</g>');
  out.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444" stroke-width="1"/>`);
  out.push('<g fill="#333" font-size="11">');
  for (const t of xTicks) out.push(`<text x="${px(X(t))}" y="${m.top + plotH + 16}" text-anchor="middle">${formatTick(t)}</text>`);
  for (const t of yTicks) out.push(`<text x="${m.left - 8}" y="${px(Y(t) + 4)}" text-anchor="end">${formatTick(t)}</text>`);
  out.push('</g>');
  out.push(
    `<text x="${m.left + plotW / 2}" y="${height - 18}" text-anchor="middle" fill="#222">KL(π ‖ π_ref) of a continuation, nats (estimated from policy samples)</text>`,
    `<text transform="translate(20 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#222">gold reward: AFINN sentiment of a continuation</text>`,
  );

  if (options.referenceReward !== undefined && Number.isFinite(options.referenceReward)) {
    const y = px(Y(options.referenceReward));
    out.push(
      `<line x1="${m.left}" y1="${y}" x2="${m.left + plotW}" y2="${y}" stroke="#888" stroke-width="1" stroke-dasharray="5 4"/>`,
      `<text x="${m.left + plotW - 6}" y="${px(Y(options.referenceReward) + 15)}" text-anchor="end" fill="#666" font-size="11">reference (SFT) model: ${fmt(options.referenceReward)}</text>`,
    );
  }

  return { out, X, Y, left: m.left, top: m.top };
}

const px = (v: number) => v.toFixed(1);

function dotTitle(label: string, p: FrontierPoint): string {
  return `<title>${escapeXml(`${label}, step ${p.step}: KL ${fmt(p.kl)}, reward ${fmt(p.reward)}`)}</title>`;
}

export function frontierSvg(series: FrontierSeries[], options: FrontierPlotOptions = {}): string {
  refuseUnknownKeys('frontierSvg options', options, PLOT_OPTION_KEYS);
  const { out, X, Y, left, top } = drawFrame(finitePoints(series.flatMap((s) => s.points)), options);
  const m = { left, top };
  // one line per series
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const pts = s.points.filter((p) => Number.isFinite(p.kl) && Number.isFinite(p.reward));
    if (pts.length === 0) return;
    out.push(`<g fill="none" stroke="${colour}">`);
    out.push(`<polyline stroke-width="2" stroke-linejoin="round" points="${pts.map((p) => `${px(X(p.kl))},${px(Y(p.reward))}`).join(' ')}"/>`);
    out.push('</g>', `<g fill="${colour}" stroke="#ffffff" stroke-width="1">`);
    for (const p of pts) out.push(`<circle cx="${px(X(p.kl))}" cy="${px(Y(p.reward))}" r="3.5">${dotTitle(s.label, p)}</circle>`);
    const last = pts[pts.length - 1]!;
    out.push(`<circle cx="${px(X(last.kl))}" cy="${px(Y(last.reward))}" r="6"/>`, '</g>');
  });

  // legend
  const legendX = m.left + 14, legendY = m.top + 12;
  const rowH = 18;
  out.push(
    `<rect x="${legendX - 8}" y="${legendY - 10}" width="150" height="${series.length * rowH + 24}" fill="#ffffff" fill-opacity="0.9" stroke="#ccc"/>`,
  );
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const y = legendY + i * rowH;
    out.push(
      `<line x1="${legendX}" y1="${y}" x2="${legendX + 22}" y2="${y}" stroke="${colour}" stroke-width="2"/>`,
      `<circle cx="${legendX + 11}" cy="${y}" r="3.5" fill="${colour}"/>`,
      `<text x="${legendX + 30}" y="${y + 4}" fill="#222">${escapeXml(s.label)}</text>`,
    );
  });
  out.push(`<text x="${legendX}" y="${legendY + series.length * rowH + 4}" fill="#666" font-size="10">large dot: last step</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * The DPO paper's Figure 2 (left): every evaluation of every run as a dot in its method's colour
 * (a faint line joins a run's evaluations in step order), and each method's frontier over all its
 * runs as a thick line.
 */
export function methodsFrontierSvg(methods: MethodSeries[], options: FrontierPlotOptions = {}): string {
  refuseUnknownKeys('methodsFrontierSvg options', options, PLOT_OPTION_KEYS);
  const { out, X, Y, left, top } = drawFrame(finitePoints(methods.flatMap((s) => s.runs.flatMap((r) => r.points))), options);
  const xy = (p: FrontierPoint) => `${px(X(p.kl))},${px(Y(p.reward))}`;
  methods.forEach((method, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    out.push(`<g fill="none" stroke="${colour}" stroke-width="1" stroke-opacity="0.35">`);
    for (const run of method.runs) {
      const pts = finitePoints(run.points);
      if (pts.length > 1) out.push(`<polyline points="${pts.map(xy).join(' ')}"/>`);
    }
    out.push('</g>', `<g fill="${colour}" fill-opacity="0.75" stroke="#ffffff" stroke-width="0.5">`);
    for (const run of method.runs) for (const p of finitePoints(run.points)) out.push(`<circle cx="${px(X(p.kl))}" cy="${px(Y(p.reward))}" r="3.5">${dotTitle(run.label, p)}</circle>`);
    out.push('</g>');
    const frontier = paretoFrontier(method.runs.flatMap((r) => r.points));
    if (frontier.length > 1) out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2.5" stroke-linejoin="round" points="${frontier.map(xy).join(' ')}"/>`);
  });

  const legendX = left + 14, legendY = top + 12;
  const rowH = 18;
  out.push(`<rect x="${legendX - 8}" y="${legendY - 10}" width="190" height="${methods.length * rowH + 24}" fill="#ffffff" fill-opacity="0.9" stroke="#ccc"/>`);
  methods.forEach((method, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const y = legendY + i * rowH;
    out.push(
      `<line x1="${legendX}" y1="${y}" x2="${legendX + 22}" y2="${y}" stroke="${colour}" stroke-width="2.5"/>`,
      `<circle cx="${legendX + 11}" cy="${y}" r="3.5" fill="${colour}"/>`,
      `<text x="${legendX + 30}" y="${y + 4}" fill="#222">${escapeXml(method.label)}</text>`,
    );
  });
  out.push(`<text x="${legendX}" y="${legendY + methods.length * rowH + 4}" fill="#666" font-size="10">dots: checkpoints · thick line: the method's frontier</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
