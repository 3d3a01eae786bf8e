import { isUuid } from '../../platform/ids.ts';
import type { ChainReport } from './audit.service.ts';

interface AuditCommands {
  verify(orgId?: string): Promise<ChainReport[]>;
  sequence(orgId?: string): Promise<{ chains: number; sequenced: number }>;
}

const USAGE = 'usage: plinth audit verify|sequence [orgId]';

/**
 * `plinth audit verify [orgId]`: checks the sequenced part of every chain (or one) and reports each
 * chain's backlog of pending events; 0 when every chain checks out, 1 when one was tampered with, 2 on
 * misuse. `plinth audit sequence [orgId]`: runs the sequencer once now (what the worker does every second).
 */
export async function runAuditCommand(audit: AuditCommands, args: string[], out: (line: string) => void = console.log): Promise<number> {
  const [sub, orgId, ...rest] = args;
  if ((sub !== 'verify' && sub !== 'sequence') || (orgId !== undefined && !isUuid(orgId)) || rest.length > 0) {
    out(USAGE);
    return 2;
  }
  if (sub === 'sequence') {
    const { chains, sequenced } = await audit.sequence(orgId);
    out(`${sequenced} event(s) sequenced in ${chains} chain(s)`);
    return 0;
  }
  const reports = await audit.verify(orgId);
  let pending = 0;
  let oldest = 0;
  for (const r of reports) {
    const backlog = r.backlog.pending > 0 ? ` pending=${r.backlog.pending} oldest=${r.backlog.oldestAgeSeconds.toFixed(1)}s` : ' pending=0';
    out(`${r.ok ? 'ok      ' : 'TAMPERED'} ${r.orgId} events=${r.events}${backlog}`);
    for (const p of r.problems) out(`         ${p}`);
    pending += r.backlog.pending;
    oldest = Math.max(oldest, r.backlog.oldestAgeSeconds);
  }
  const bad = reports.filter((r) => !r.ok).length;
  out(`${reports.length} chain(s) checked, ${bad} with problems; ${pending} pending event(s) not yet sequenced (not checked)${pending > 0 ? `, oldest ${oldest.toFixed(1)}s` : ''}`);
  return bad > 0 ? 1 : 0;
}
