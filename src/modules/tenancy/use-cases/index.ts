import type { UseCaseDeps } from './deps.ts';
import { inviteMembers } from './invite-members.ts';
import { issueApiKeys } from './issue-api-keys.ts';
import { assertMayGrant, manageMembers } from './manage-members.ts';
import { manageOrganizations } from './manage-organizations.ts';
import { signUp } from './sign-up.ts';

/** Tenancy's use cases, one file each (the module passed ~300 lines of service code). */
export function createTenancyUseCases(deps: UseCaseDeps) {
  return {
    signup: signUp(deps),
    ...manageOrganizations(deps),
    ...manageMembers(deps),
    assertMayGrant,
    invitations: inviteMembers(deps),
    apiKeys: issueApiKeys(deps),
  };
}

export type TenancyUseCases = ReturnType<typeof createTenancyUseCases>;
