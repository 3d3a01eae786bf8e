import { AppError } from '../../platform/http/errors.ts';

export const connectionNotFound = () => new AppError('SSO.CONNECTION_NOT_FOUND', 404, 'SSO connection not found');
export const domainNotFound = () => new AppError('SSO.DOMAIN_NOT_FOUND', 404, 'Domain not found');
export const domainTaken = () => new AppError('SSO.DOMAIN_TAKEN', 409, 'This domain is already added or verified by an organization');
export const domainNotVerified = () => new AppError('SSO.DOMAIN_NOT_VERIFIED', 409, 'Verify the domain before enforcing SSO for it');
export const verificationFailed = (name: string) =>
  new AppError('SSO.DOMAIN_VERIFICATION_FAILED', 422, `No TXT record at ${name} holds the verification value`, { recordName: name });
/** Every refused SSO response (bad signature, audience, issuer, replay, state, clock) answers the same. */
export const ssoRefused = () => new AppError('SSO.LOGIN_REFUSED', 401, 'The identity provider response was refused');
export const emailNotInVerifiedDomain = () =>
  new AppError('SSO.EMAIL_DOMAIN_NOT_VERIFIED', 403, "The identity provider asserted an e-mail outside the organization's verified domains");
export const ssoRequired = (orgId: string) =>
  new AppError('AUTH.SSO_REQUIRED', 403, 'This e-mail domain signs in with single sign-on only', { orgId });
export const badConnectionConfig = (detail: string) => new AppError('SSO.INVALID_CONFIG', 422, detail);
export const invalidDomain = () => new AppError('SSO.INVALID_DOMAIN', 422, 'Not a domain name (e.g. example.com)');
