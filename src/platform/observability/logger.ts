import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { activeTraceIds } from './tracing.ts';

/** Field names whose values are never written to logs, at the top level and two levels down. */
const SECRET_KEYS = [
  'password',
  'newPassword',
  'currentPassword',
  'passwordHash',
  'token',
  'accessToken',
  'refreshToken',
  'tokenHash',
  'secret',
  'clientSecret',
  'apiKey',
  'authorization',
  'cookie',
  '"set-cookie"',
  '"x-api-key"',
];

function keyPath(prefix: string, key: string): string {
  return key.startsWith('"') ? `${prefix}[${key}]` : `${prefix}.${key}`;
}

/** Paths never written to logs: credentials, tokens and anything that looks like a secret. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  ...SECRET_KEYS.filter((k) => !k.startsWith('"')),
  ...SECRET_KEYS.map((k) => keyPath('*', k)),
  ...SECRET_KEYS.map((k) => keyPath('*.*', k)),
];

const NO_TRACE = Object.freeze({});

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    base: { service: 'plinth', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label) => ({ level: label }) },
    // traceId/spanId of the active span on every line (none when tracing is off: a no-op lookup).
    mixin: () => activeTraceIds() ?? NO_TRACE,
  };
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return destination ? pino(loggerOptions(level), destination) : pino(loggerOptions(level));
}

export type { Logger };
