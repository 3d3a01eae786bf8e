import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runRestoreDrill } from '../../scripts/restore-drill.ts';
import { usingPostgres } from '../../src/platform/testing/test-db.ts';

const havePostgresBinaries = fs.existsSync('/usr/lib/postgresql/15/bin/pg_basebackup');

/** The backup/restore drill on a small dataset: in the services run (it starts two Postgres clusters of its own). */
describe.skipIf(!usingPostgres || !havePostgresBinaries)('backup and point-in-time restore drill', () => {
  it('restores the base backup + archived WAL to the target time: same rows, nothing after it, audit chains verified', async () => {
    const r = await runRestoreDrill({ orgs: 2, tasksPerOrg: 5 });
    expect(r.countsRestored).toEqual(r.countsAtTarget);
    expect(r.countsAtTarget.tasks).toBe(15); // 2 orgs × 5 before the backup, 1 × 5 between backup and target
    expect(r.writtenAfterTarget).toBe(5);
    expect(r.foundAfterTarget).toBe(0);
    expect(r.auditVerify.exitCode).toBe(0);
    expect(r.auditVerify.output).toMatch(/3 chain\(s\) checked, 0 with problems/);
    expect(r.auditVerify.output).not.toMatch(/pending=[1-9]/); // every event was chained before the target
    expect(r.logical.countsRestored).toEqual(r.logical.countsAtDump);
    expect(r.ok).toBe(true);
  }, 180_000);
});
