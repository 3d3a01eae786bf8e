import { isUuid } from '../../platform/ids.ts';

export interface RebuildReport {
  orgId: string;
  drift: Record<string, number>;
}

/**
 * `plinth reports rebuild [--org <orgId>]`: recomputes the read models from the source tables and prints
 * the drift found (rows that differed) per org. 0 when done (drift is reported and repaired), 2 on misuse.
 */
export async function runReportsCommand(
  reporting: { rebuild(orgId?: string): Promise<RebuildReport[]> },
  args: string[],
  out: (line: string) => void = console.log,
): Promise<number> {
  const [sub, ...rest] = args;
  let orgId: string | undefined;
  if (rest.length === 2 && rest[0] === '--org') orgId = rest[1];
  else if (rest.length === 1 && rest[0]!.startsWith('--org=')) orgId = rest[0]!.slice('--org='.length);
  const misuse = sub !== 'rebuild' || (rest.length > 0 && orgId === undefined) || (orgId !== undefined && !isUuid(orgId));
  if (misuse) {
    out('usage: plinth reports rebuild [--org <orgId>]');
    return 2;
  }
  const reports = await reporting.rebuild(orgId);
  let drifted = 0;
  for (const r of reports) {
    const total = Object.values(r.drift).reduce((a, b) => a + b, 0);
    if (total > 0) drifted++;
    out(`${total > 0 ? 'drift   ' : 'ok      '} ${r.orgId} ${Object.entries(r.drift).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  }
  out(`${reports.length} org(s) rebuilt, ${drifted} had drifted (repaired)`);
  return 0;
}
