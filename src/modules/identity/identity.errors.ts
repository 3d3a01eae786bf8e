import { AppError } from '../../platform/http/errors.ts';

export const invalidCredentials = () => new AppError('AUTH.INVALID_CREDENTIALS', 401, 'The email or password is incorrect');
export const emailTaken = () => new AppError('IDENTITY.EMAIL_TAKEN', 409, 'An account with this email already exists');
export const sessionRequired = () =>
  new AppError('AUTH.SESSION_REQUIRED', 403, 'This action needs a user session, not an API key');
export const userNotFound = () => new AppError('IDENTITY.USER_NOT_FOUND', 404, 'User not found');
export const sessionNotFound = () => new AppError('IDENTITY.SESSION_NOT_FOUND', 404, 'Session not found');

export const wrongPassword = () => new AppError('IDENTITY.WRONG_PASSWORD', 403, 'The current password is incorrect');
