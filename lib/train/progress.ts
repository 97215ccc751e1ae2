// A one-line progress bar on stderr, redrawn in place with \r, with live metrics. When the stream
// is not a terminal it prints a plain line at the start, every tenth of the way and at the end.
import { refuseUnknownKeys } from './options.js';

export interface ProgressBarOptions {
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Draw in place (default: when the stream is a terminal). */
  interactive?: boolean;
  /** Print nothing at all. */
  silent?: boolean;
}

function formatField(name: string, value: number): string | null {
  if (!Number.isFinite(value)) return null;
  const abs = Math.abs(value);
  const text = abs >= 100 || (Number.isInteger(value) && abs >= 10) ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(3);
  return `${name} ${text}`;
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

export class ProgressBar {
  private readonly stream: NonNullable<ProgressBarOptions['stream']>;
  private readonly interactive: boolean;
  private readonly silent: boolean;
  private label = '';
  private total = 1;
  private done = 0;
  private fields: Record<string, number> = {};
  private started = 0;
  private lastDraw = 0;
  private lastTenth = -1;
  private active = false;
  private readonly runStarted = Date.now();

  constructor(options: ProgressBarOptions = {}) {
    refuseUnknownKeys('ProgressBar options', options, Object.keys({ stream: 1, interactive: 1, silent: 1 } satisfies Record<keyof ProgressBarOptions, 1>));
    this.stream = options.stream ?? process.stderr;
    this.interactive = options.interactive ?? Boolean(this.stream.isTTY);
    this.silent = options.silent ?? false;
  }

  /** Begin a phase of `total` units (ends the previous one if still open). */
  start(label: string, total: number): void {
    if (this.active) this.finish();
    this.label = label;
    this.total = Math.max(1, total);
    this.done = 0;
    this.fields = {};
    this.started = Date.now();
    this.lastDraw = 0;
    this.lastTenth = -1;
    this.active = true;
    if (!this.interactive && !this.silent) this.stream.write(`${label} ...\n`);
    else this.draw(true);
  }

  update(done: number, fields: Record<string, number> = {}): void {
    if (!this.active) return;
    this.done = Math.min(done, this.total);
    this.fields = fields;
    if (this.interactive) {
      this.draw(false);
    } else if (!this.silent) {
      const tenth = Math.floor((10 * this.done) / this.total);
      if (tenth > this.lastTenth && tenth < 10 && this.done > 0) {
        this.lastTenth = tenth;
        if (tenth > 0) this.stream.write(`  ${this.line(false)}\n`);
      }
    }
  }

  /** Close the current phase: the final state stays on its own line. */
  finish(): void {
    if (!this.active) return;
    this.active = false;
    if (this.silent) return;
    this.done = this.total;
    if (this.interactive) this.stream.write(`\r${this.fit(this.line(true))}\x1b[K\n`);
    else this.stream.write(`  ${this.line(false)} (done)\n`);
  }

  private fields_(): string {
    return Object.entries(this.fields)
      .map(([k, v]) => formatField(k, v))
      .filter((x) => x !== null)
      .join('  ');
  }

  private line(withBar: boolean): string {
    const fraction = this.done / this.total;
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = withBar ? `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ` : '';
    const now = Date.now();
    const head = withBar ? `${this.label.padEnd(14)} ` : `${this.label}: `;
    return `${head}${bar}${this.done}/${this.total}  ${this.fields_()}  ${formatDuration(now - this.started)} (total ${formatDuration(now - this.runStarted)})`;
  }

  private fit(text: string): string {
    const columns = this.stream.columns ?? 120;
    return text.length > columns - 1 ? text.slice(0, columns - 1) : text;
  }

  private draw(force: boolean): void {
    if (this.silent || !this.interactive) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100 && this.done < this.total) return;
    this.lastDraw = now;
    this.stream.write(`\r${this.fit(this.line(true))}\x1b[K`);
  }
}
