import { AppError } from '../../platform/http/errors.ts';

export const connectionNotFound = () => new AppError('INTEGRATIONS.CONNECTION_NOT_FOUND', 404, 'No integration connection with this id in this organization');
export const unknownConnector = (name: string) => new AppError('INTEGRATIONS.UNKNOWN_CONNECTOR', 400, `No connector named "${name}"`);
export const invalidConfig = (detail: string) => new AppError('INTEGRATIONS.INVALID_CONFIG', 400, detail);
export const nameTaken = () => new AppError('INTEGRATIONS.NAME_TAKEN', 409, 'Another connection in this organization has this name');
export const backfillRunning = () => new AppError('INTEGRATIONS.BACKFILL_RUNNING', 409, 'A backfill of this connection is already running');
