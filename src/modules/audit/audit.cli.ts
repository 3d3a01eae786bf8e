import { isUuid } from '../../platform/ids.ts';
import type { ChainReport } from './audit.service.ts';

/** `plinth audit verify [orgId]`: 0 when every chain checks out, 1 when one was tampered with, 2 on misuse. */
export async function runAuditCommand(audit: { verify(orgId?: string): Promise<ChainReport[]> }, args: string[], out: (line: string) => void = console.log): Promise<number> {
  const [sub, orgId] = args;
  if (sub !== 'verify' || (orgId !== undefined && !isUuid(orgId))) {
    out('usage: plinth audit verify [orgId]');
    return 2;
  }
  const reports = await audit.verify(orgId);
  for (const r of reports) {
    out(`${r.ok ? 'ok      ' : 'TAMPERED'} ${r.orgId} events=${r.events}`);
    for (const p of r.problems) out(`         ${p}`);
  }
  const bad = reports.filter((r) => !r.ok).length;
  out(`${reports.length} chain(s) checked, ${bad} with problems`);
  return bad > 0 ? 1 : 0;
}
