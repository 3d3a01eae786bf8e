import { AppError } from '../../platform/http/errors.ts';

export const memberNotFound = () => new AppError('TENANCY.MEMBER_NOT_FOUND', 404, 'Member not found');
export const lastOwner = () =>
  new AppError('TENANCY.LAST_OWNER', 409, 'The last owner cannot leave or be demoted; make another member owner first');
export const roleNotAllowed = (role: string) =>
  new AppError('TENANCY.ROLE_NOT_ALLOWED', 403, `You cannot grant or change the role ${role}: it has permissions you lack`);
export const invitationNotFound = () => new AppError('TENANCY.INVITATION_NOT_FOUND', 404, 'Invitation not found');
export const apiKeyNotFound = () => new AppError('TENANCY.API_KEY_NOT_FOUND', 404, 'API key not found');
