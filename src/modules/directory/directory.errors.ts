import { AppError } from '../../platform/http/errors.ts';

/** RFC 7644 §3.12 `scimType` values Plinth answers with. */
export type ScimType = 'invalidFilter' | 'tooMany' | 'uniqueness' | 'mutability' | 'invalidSyntax' | 'invalidPath' | 'noTarget' | 'invalidValue';

/** A SCIM error: rendered as `urn:ietf:params:scim:api:messages:2.0:Error` by the SCIM routes (problem+json elsewhere). */
export const scimError = (status: number, scimType: ScimType | null, detail: string) =>
  new AppError(`DIRECTORY.SCIM_${(scimType ?? (status === 404 ? 'notFound' : 'error')).replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`, status, detail, scimType ? { scimType } : {});

export const scimUnauthorized = () => new AppError('DIRECTORY.SCIM_UNAUTHORIZED', 401, 'A valid SCIM bearer token for this organization is required', {}, { 'www-authenticate': 'Bearer realm="scim"' });
export const scimNotFound = (what: 'User' | 'Group') => scimError(404, null, `${what} not found`);
export const tokenNotFound = () => new AppError('DIRECTORY.TOKEN_NOT_FOUND', 404, 'SCIM token not found');
