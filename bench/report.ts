/**
 * The figures a benchmark run produces, their ratios to the machine's own limits, and the table
 * and JSON they are reported in. Pure: no I/O.
 *
 * @module
 */

/** How a figure compares with its target. */
export interface Target {
  /** The target as written in PRODUCT.md, e.g. "< 1 ms". */
  text: string;
  /** Whether this run met it. */
  met: boolean;
}

/** A ratio of a figure to a limit measured in the same run. */
export interface Ratio {
  /** Id of the limit figure. */
  to: string;
  /** value / limit value. */
  value: number;
  /** Human-readable form, e.g. "41% of raw Fernet 100 B" or "3.2x raw TCP p50". */
  text: string;
}

/** One measured number. */
export interface Figure {
  /** Stable id, e.g. `delivery.latency.p50`. */
  id: string;
  /** Section of the table: `limits`, `delivery`, `pipeline`, `session`, `process`. */
  group: string;
  /** What was measured. */
  label: string;
  /** The number. */
  value: number;
  /** Its unit: `msg/s`, `ms`, `MB/s`, `MiB`. */
  unit: string;
  ratio?: Ratio;
  target?: Target;
  /** Extra context (sample size, how it was measured). */
  note?: string;
}

/** The JSON document written to bench/results.json. */
export interface Results {
  /** When the run started (ISO 8601). */
  date: string;
  /** `--quick` or full. */
  mode: "quick" | "full";
  /** Deno and V8 versions, CPU count, load average at start and end. */
  machine: Record<string, unknown>;
  /** Seconds the whole run took. */
  seconds: number;
  figures: Figure[];
}

/**
 * Collects figures as jobs produce them, so later jobs can relate theirs to earlier limits.
 *
 * @example
 * ```ts
 * const book = new FigureBook();
 * book.add({ id: "tcp.rtt.p50", group: "limits", label: "TCP RTT p50", value: 0.03, unit: "ms" });
 * book.get("tcp.rtt.p50")?.value; // 0.03
 * ```
 */
export class FigureBook {
  #figures: Figure[] = [];

  /** Adds a figure and returns it. */
  add(figure: Figure): Figure {
    this.#figures.push(figure);
    return figure;
  }

  /** The figure with this id, if measured. */
  get(id: string): Figure | undefined {
    return this.#figures.find((f) => f.id === id);
  }

  /** Every figure in the order added. */
  all(): Figure[] {
    return [...this.#figures];
  }
}

/**
 * A ratio of `value` to the limit figure `limit`: as a percentage for rates ("41% of ..."), as a
 * factor for latencies ("3.2x ..."). Undefined when the limit was not measured.
 *
 * @example
 * ```ts
 * ratio(5000, { id: "f", group: "limits", label: "raw Fernet", value: 10000, unit: "msg/s" });
 * // { to: "f", value: 0.5, text: "50% of raw Fernet" }
 * ```
 */
export function ratio(value: number, limit: Figure | undefined): Ratio | undefined {
  if (!limit || !(limit.value > 0)) return undefined;
  const r = value / limit.value;
  const isTime = limit.unit === "ms" || limit.unit === "µs";
  const text = isTime ? `${fmt(r)}x ${limit.label}` : `${fmt(r * 100)}% of ${limit.label}`;
  return { to: limit.id, value: r, text };
}

/**
 * Formats a number with about three significant digits and thousands separators.
 *
 * @example
 * ```ts
 * fmt(12345.6); // "12,346"
 * fmt(0.01234); // "0.0123"
 * ```
 */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  if (abs >= 100) return Math.round(n).toLocaleString("en-US");
  if (abs >= 10) return n.toFixed(1);
  if (abs >= 1) return n.toFixed(2);
  if (abs === 0) return "0";
  return n.toPrecision(3);
}

/**
 * Renders figures as a plain-text table, one section per group.
 *
 * @example
 * ```ts
 * console.log(renderTable(book.all()));
 * ```
 */
export function renderTable(figures: readonly Figure[]): string {
  const rows: string[][] = [];
  let group = "";
  for (const f of figures) {
    if (f.group !== group) {
      group = f.group;
      rows.push([`[${group}]`, "", "", "", ""]);
    }
    rows.push([
      "  " + f.label,
      `${fmt(f.value)} ${f.unit}`,
      f.ratio?.text ?? "",
      f.target?.text ?? "",
      f.target ? (f.target.met ? "ok" : "MISSED") : "",
    ]);
  }
  const head = ["figure", "value", "ratio (same run)", "target", ""];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
