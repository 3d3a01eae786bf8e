import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { redactSecrets } from './redact.ts';
import { activeTraceIds } from './tracing.ts';

const NO_TRACE = Object.freeze({});

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    base: { service: 'plinth', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Secrets by field name at any depth (redact.ts), on every line's logged object. Child bindings
    // are ids (requestId, userId, tenantId) and are not walked.
    formatters: { level: (label) => ({ level: label }), log: (obj) => redactSecrets(obj) },
    // traceId/spanId of the active span on every line (none when tracing is off: a no-op lookup).
    mixin: () => activeTraceIds() ?? NO_TRACE,
    // pino's default strategy writes into the mixin object; the shared empty one must stay untouched.
    mixinMergeStrategy: (mergeObject, mixinObject) => (mixinObject === NO_TRACE ? mergeObject : Object.assign(mixinObject, mergeObject)),
  };
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return destination ? pino(loggerOptions(level), destination) : pino(loggerOptions(level));
}

export type { Logger };
