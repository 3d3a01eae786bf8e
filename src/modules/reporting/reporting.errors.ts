import { AppError } from '../../platform/http/errors.ts';

/** Error codes of the reporting module. */
export const REPORTING_ERRORS = {
  exportNotFound: 'REPORTING.EXPORT_NOT_FOUND',
  invalidFilters: 'REPORTING.INVALID_FILTERS',
  resourceForbidden: 'REPORTING.RESOURCE_FORBIDDEN',
  unknownReport: 'REPORTING.UNKNOWN_REPORT',
  invalidRange: 'REPORTING.INVALID_RANGE',
  /** Stored on a failed export (never thrown to a client). */
  exportFailed: 'REPORTING.EXPORT_FAILED',
  exportTimeout: 'REPORTING.EXPORT_TIMEOUT',
} as const;

export const exportNotFound = () => new AppError(REPORTING_ERRORS.exportNotFound, 404, 'Export not found');
export const invalidFilters = (detail: string) => new AppError(REPORTING_ERRORS.invalidFilters, 400, detail);
export const resourceForbidden = (resource: string, permission: string) =>
  new AppError(REPORTING_ERRORS.resourceForbidden, 403, `Exporting ${resource} also needs the ${permission} permission`);
export const unknownReport = (name: string) => new AppError(REPORTING_ERRORS.unknownReport, 404, `Unknown report "${name.slice(0, 50)}"`);
export const invalidRange = (detail: string) => new AppError(REPORTING_ERRORS.invalidRange, 400, detail);
