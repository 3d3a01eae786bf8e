import { AppError } from '../../platform/http/errors.ts';

export const webhookNotFound = () => new AppError('NOTIFICATIONS.WEBHOOK_NOT_FOUND', 404, 'No webhook endpoint with this id in this organization');
export const deliveryNotFound = () => new AppError('NOTIFICATIONS.DELIVERY_NOT_FOUND', 404, 'No delivery with this id for this webhook endpoint');
export const invalidUrl = (problem: string) => new AppError('NOTIFICATIONS.INVALID_URL', 422, `The webhook url ${problem}`);
export const deliveryInFlight = () => new AppError('NOTIFICATIONS.DELIVERY_PENDING', 409, 'The delivery is still pending; redeliver it once it has succeeded or failed');
