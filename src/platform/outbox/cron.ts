/** Exponential backoff with jitter: base·2^(attempt-1), capped, then a random 50–100 % of it (spreads retry storms). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp * (0.5 + random() * 0.5));
}

export type ScheduleSpec = { cron: string } | { everyMs: number };

const FIELDS: Array<[min: number, max: number]> = [
  [0, 59], // minute
  [0, 23], // hour
  [1, 31], // day of month
  [1, 12], // month
  [0, 6], // day of week (0 = Sunday)
];

export class CronError extends Error {}

function parseField(text: string, [min, max]: [number, number]): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|\d+(?:-\d+)?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new CronError(`bad cron field "${text}"`);
    const [, range, stepText] = m;
    const step = stepText ? Number(stepText) : 1;
    let lo = min;
    let hi = max;
    if (range !== '*') {
      const [a, b] = range!.split('-').map(Number);
      lo = a!;
      hi = b ?? (stepText ? max : a!);
    }
    if (lo < min || hi > max || lo > hi || step < 1) throw new CronError(`cron field "${text}" out of range ${min}-${max}`);
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** Parses a 5-field cron expression (minute hour day-of-month month day-of-week, UTC). */
export function parseCron(expr: string): (from: Date) => Date {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) throw new CronError(`cron "${expr}" needs 5 fields (minute hour day month weekday)`);
  const [minute, hour, dom, month, dow] = parts.map((p, i) => parseField(p, FIELDS[i]!));
  const domAny = parts[2] === '*';
  const dowAny = parts[4] === '*';
  return (from) => {
    const t = new Date(from.getTime());
    t.setUTCSeconds(0, 0);
    t.setUTCMinutes(t.getUTCMinutes() + 1);
    // Minute steps over at most ~4 years covers every valid expression (e.g. Feb 29).
    for (let i = 0; i < 4 * 366 * 24 * 60; i++) {
      const dayOk = domAny && dowAny
        ? true
        : domAny ? dow!.has(t.getUTCDay())
        : dowAny ? dom!.has(t.getUTCDate())
        : dom!.has(t.getUTCDate()) || dow!.has(t.getUTCDay());
      if (month!.has(t.getUTCMonth() + 1) && dayOk && hour!.has(t.getUTCHours()) && minute!.has(t.getUTCMinutes())) return t;
      t.setUTCMinutes(t.getUTCMinutes() + 1);
    }
    throw new CronError(`cron "${expr}" never matches`);
  };
}

export function nextRunFn(spec: ScheduleSpec): (from: Date) => Date {
  if ('cron' in spec) return parseCron(spec.cron);
  if (!Number.isInteger(spec.everyMs) || spec.everyMs < 10) throw new CronError('everyMs must be an integer ≥ 10');
  return (from) => new Date(from.getTime() + spec.everyMs);
}
