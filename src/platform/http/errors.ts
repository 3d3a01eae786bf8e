import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isDatabaseUnavailable } from '../db/unavailable.ts';

/**
 * The one error type services throw. `code` is stable and machine-readable ('PROJECTS.TASK_NOT_FOUND');
 * `detail` is safe to show a client; `context` is extra problem members (e.g. validation errors).
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    readonly detail: string,
    readonly context: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
    this.name = 'AppError';
  }
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  requestId: string;
  instance?: string;
  [extra: string]: unknown;
}

export const PROBLEM_TYPE_BASE = 'https://plinth.dev/problems/';

export function problemType(code: string): string {
  return PROBLEM_TYPE_BASE + code.toLowerCase().replace(/[._]/g, '-');
}

/** Members a problem body may not override: they are owned by the mapping itself. */
const RESERVED = new Set(['type', 'title', 'status', 'detail', 'code', 'requestId', 'instance']);

export function buildProblem(
  status: number,
  code: string,
  detail: string,
  requestId: string,
  extra: Record<string, unknown> = {},
): Problem {
  const problem: Problem = {
    type: problemType(code),
    title: STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    code,
    requestId,
  };
  for (const [k, v] of Object.entries(extra)) if (!RESERVED.has(k)) problem[k] = v;
  return problem;
}

export function sendProblem(
  reply: FastifyReply,
  status: number,
  code: string,
  detail: string,
  extra: Record<string, unknown> = {},
): FastifyReply {
  const body = buildProblem(status, code, detail, reply.request.id, extra);
  return reply.code(status).type('application/problem+json; charset=utf-8').send(body);
}

/** Fastify's own error codes mapped to public codes. Anything unknown with a 4xx keeps its status. */
const FASTIFY_CODES: Record<string, { status: number; code: string; detail: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'HTTP.BODY_TOO_LARGE', detail: 'The request body exceeds the size limit' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'HTTP.UNSUPPORTED_MEDIA_TYPE', detail: 'Send the body as application/json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'HTTP.BAD_CONTENT_LENGTH', detail: 'Content-Length does not match the body' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'HTTP.EMPTY_BODY', detail: 'The JSON body is empty' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'HTTP.MALFORMED_JSON', detail: 'The body is not valid JSON' },
  FST_ERR_BAD_URL: { status: 400, code: 'HTTP.BAD_URL', detail: 'The URL is malformed' },
};

/** Maps any thrown error to problem+json. 5xx details never leave the process; they go to the log. */
export function errorHandler(error: FastifyError | AppError | Error, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof AppError) {
    if (error.status >= 500) request.log.error({ err: error }, 'request failed');
    for (const [k, v] of Object.entries(error.headers)) reply.header(k, v);
    const detail = error.status >= 500 ? 'The server could not complete the request' : error.detail;
    return sendProblem(reply, error.status, error.code, detail, error.context);
  }
  if (isDatabaseUnavailable(error)) {
    // Fail fast and say when to retry; the pool reconnects by itself once Postgres is back.
    request.log.warn({ err: error }, 'database unavailable');
    reply.header('retry-after', '2');
    return sendProblem(reply, 503, 'DB.UNAVAILABLE', 'The database is temporarily unavailable; retry shortly');
  }
  const fe = error as FastifyError;
  if (fe.validation) {
    const errors = fe.validation.map((v) => ({
      in: fe.validationContext ?? 'body',
      path: v.instancePath || '/',
      message: v.message ?? 'is invalid',
    }));
    return sendProblem(reply, 400, 'HTTP.VALIDATION_FAILED', summarizeValidation(errors), { errors });
  }
  // JSON.parse SyntaxError from the content-type parser
  if (error instanceof SyntaxError && fe.statusCode === 400) {
    return sendProblem(reply, 400, 'HTTP.MALFORMED_JSON', 'The body is not valid JSON');
  }
  const known = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (known) return sendProblem(reply, known.status, known.code, known.detail);
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status === 503 || status === 429) {
    return sendProblem(reply, status, status === 503 ? 'HTTP.UNAVAILABLE' : 'HTTP.RATE_LIMITED', fe.message);
  }
  if (status >= 400 && status < 500) {
    // Fastify's own client errors carry safe messages; anything else stays generic.
    const detail = fe.code?.startsWith('FST_') ? fe.message : (STATUS_CODES[status] ?? 'Bad request');
    return sendProblem(reply, status, `HTTP.${(STATUS_CODES[status] ?? 'ERROR').toUpperCase().replace(/[^A-Z]+/g, '_')}`, detail);
  }
  request.log.error({ err: error }, 'unhandled error');
  return sendProblem(reply, 500, 'HTTP.INTERNAL', 'The server could not complete the request');
}

function summarizeValidation(errors: Array<{ in: string; path: string; message: string }>): string {
  const first = errors[0];
  if (!first) return 'The request is invalid';
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
  return `${first.in} ${first.path} ${first.message}${more}`;
}

export function notFound(detail = 'The resource does not exist'): AppError {
  return new AppError('HTTP.NOT_FOUND', 404, detail);
}
