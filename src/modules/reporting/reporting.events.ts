/** Events the reporting module publishes (through the outbox, in the transaction of the change). */
export const REPORTING_EVENTS = {
  /** Internal: an export was queued; its handler wakes the export runner at once (a schedule also polls). */
  exportRequested: 'reporting.export_requested',
  /** An export's file is ready to download (webhook-subscribable; the requester is also e-mailed). */
  exportReady: 'reporting.export_ready',
} as const;

export interface ExportRequestedPayload {
  exportId: string;
}

export interface ExportReadyPayload {
  exportId: string;
  resource: string;
  format: 'csv' | 'ndjson';
  rows: number;
  bytes: number;
  expiresAt: string;
  requestedBy: string;
}

/** Internal: e-mail the requester that the export is ready (payload carries the address; never a webhook). */
export const EXPORT_EMAIL = 'reporting.export_email_requested';

export interface ExportEmailPayload {
  exportId: string;
  email: string;
  resource: string;
  format: 'csv' | 'ndjson';
  rows: number;
  expiresAt: string;
}
