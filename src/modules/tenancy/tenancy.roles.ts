/** Named permissions routes declare. Other modules reference these names through tenancy's index.ts. */
export const PERMISSIONS = {
  orgRead: 'org:read',
  orgManage: 'org:manage',
  membersRead: 'members:read',
  membersManage: 'members:manage',
  apiKeysManage: 'api-keys:manage',
  auditRead: 'audit:read',
  projectsRead: 'projects:read',
  projectsWrite: 'projects:write',
  projectsManage: 'projects:manage',
  tasksWrite: 'tasks:write',
  commentsWrite: 'comments:write',
  billingRead: 'billing:read',
  billingManage: 'billing:manage',
  /** Send usage events (metering) for the org. */
  usageWrite: 'usage:write',
  webhooksManage: 'webhooks:manage',
  reportsRead: 'reports:read',
  exportsManage: 'exports:manage',
  /** SSO connections, verified domains and enforcement, security policies: owner only (not in admin). */
  ssoManage: 'sso:manage',
  directoryManage: 'directory:manage',
  /** owner only: schedule the org's deletion (hard delete after the grace period). */
  orgDelete: 'org:delete',
  integrationsManage: 'integrations:manage',
} as const;

export type Permission = (typeof PERMISSIONS)[keyof typeof PERMISSIONS];
export const ALL_PERMISSIONS: readonly Permission[] = Object.values(PERMISSIONS);

export const ROLES = ['owner', 'admin', 'member', 'viewer', 'billing'] as const;
export type Role = (typeof ROLES)[number];

const P = PERMISSIONS;
const viewer: Permission[] = [P.orgRead, P.membersRead, P.projectsRead, P.reportsRead];
const member: Permission[] = [...viewer, P.tasksWrite, P.commentsWrite];
const admin: Permission[] = [
  ...member,
  P.orgManage,
  P.projectsWrite,
  P.projectsManage,
  P.membersManage,
  P.apiKeysManage,
  P.auditRead,
  P.billingRead,
  P.usageWrite,
  P.webhooksManage,
  P.exportsManage,
  P.directoryManage,
  P.integrationsManage,
];
const billing: Permission[] = [P.orgRead, P.membersRead, P.billingRead, P.billingManage];

/** Viewer reads; member writes tasks and comments; admin manages projects, members and keys; billing
 * manages billing; owner has everything. Looked up on every request, so a role change applies at once. */
export const ROLE_PERMISSIONS: Readonly<Record<Role, ReadonlySet<Permission>>> = {
  viewer: new Set(viewer),
  member: new Set(member),
  admin: new Set(admin),
  billing: new Set(billing),
  owner: new Set(ALL_PERMISSIONS),
};

export function permissionsOf(role: string): ReadonlySet<string> {
  return ROLE_PERMISSIONS[role as Role] ?? new Set();
}

/** A caller may hand out a role (or API key scopes) only within what they hold themselves. */
export function isSubset(wanted: Iterable<string>, held: ReadonlySet<string>): boolean {
  for (const p of wanted) if (!held.has(p)) return false;
  return true;
}
