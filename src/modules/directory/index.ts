import type { Database } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { Audit } from '../audit/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Tenancy } from '../tenancy/index.ts';
import { registerDirectoryJobs } from './directory.jobs.ts';
import { createDirectoryRepo } from './directory.repo.ts';
import { directoryRoutes } from './directory.routes.ts';
import { scimRoutes } from './directory.scim.routes.ts';
import { createDirectoryService, type DirectoryService } from './directory.service.ts';
import { createOrgDeletionsRepo } from './org-deletions.repo.ts';
import { orgDeletion, type OrgDeletionUseCases } from './use-cases/org-deletion.ts';

export { DIRECTORY_MANAGE } from './directory.routes.ts';
export { SCIM_TOKEN_PREFIX } from './directory.service.ts';
export { SCIM } from './directory.scim.ts';
export { ORG_DELETION_GRACE_MS } from './use-cases/org-deletion.ts';

export interface DirectoryModuleDeps {
  db: Database;
  audit: Audit;
  identity: Identity;
  tenancy: Tenancy;
}

/**
 * Directory sync: SCIM 2.0 (RFC 7644) Users and Groups per org, authenticated by per-org bearer tokens,
 * mapped to tenancy memberships and roles; deprovisioning ends the membership, the member's API keys
 * and the user's sessions. Also org deletion (data rights): scheduled by an owner, purged after a grace period.
 */
export interface DirectoryModule extends ModuleSurface {
  createToken: DirectoryService['createToken'];
  setGroupRoles: DirectoryService['setGroupRoles'];
  /** Hard-deletes the orgs whose deletion grace period ended by `now` (the worker schedule calls it). */
  purgeDueOrgs: OrgDeletionUseCases['purgeDue'];
}

export function createDirectory(deps: DirectoryModuleDeps): DirectoryModule {
  const service = createDirectoryService({ repo: createDirectoryRepo(deps.db), audit: deps.audit, identity: deps.identity, tenancy: deps.tenancy });
  const deletion = orgDeletion({ db: deps.db, audit: deps.audit, deletions: createOrgDeletionsRepo(deps.db) });
  return {
    name: 'directory',
    purgeDueOrgs: deletion.purgeDue,
    createToken: service.createToken,
    setGroupRoles: service.setGroupRoles,
    routes: [
      { name: 'directory', prefix: '/v1', plugin: asPlugin(directoryRoutes(service, deletion)) },
      { name: 'scim', prefix: '/scim/v2', plugin: asPlugin(scimRoutes(service)) },
    ],
    registerJobs: (jobs) => registerDirectoryJobs(jobs, deletion.purgeDue),
  };
}
