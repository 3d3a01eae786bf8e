import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { lazyChild } from './lazy-logger.ts';
import { createLogger } from './logger.ts';

function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger(level, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
  return { logger, lines };
}

describe('lazy child logger', () => {
  it('makes no pino child until a line is logged at an enabled level; then the line carries every binding', () => {
    const { logger, lines } = capture('warn');
    const childSpy = vi.spyOn(logger, 'child');
    const request = lazyChild(logger, { requestId: 'r1' });
    const bound = request.child({ userId: 'u1', tenantId: 't1' });
    bound.info('not logged');
    bound.debug({ x: 1 }, 'not logged');
    expect(childSpy).not.toHaveBeenCalled();
    expect(bound.isLevelEnabled('info')).toBe(false);
    expect(bound.isLevelEnabled('error')).toBe(true);
    expect(bound.level).toBe('warn');
    bound.warn({ status: 503 }, 'shed');
    // Both levels made now (pino children inherit the spied method): the request's, then the bound one.
    expect(childSpy).toHaveBeenCalledTimes(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ requestId: 'r1', userId: 'u1', tenantId: 't1', status: 503, msg: 'shed', level: 'warn' });
    bound.error(new Error('boom'));
    expect(lines[1]).toMatchObject({ requestId: 'r1', userId: 'u1', level: 'error' });
    expect((lines[1]!.err as { message: string }).message).toBe('boom');
    // Parent lines carry only the parent's bindings.
    request.warn('parent');
    expect(lines[2]).toMatchObject({ requestId: 'r1', msg: 'parent' });
    expect(lines[2]!.userId).toBeUndefined();
  });

  it('a child level of its own applies (Fastify passes a route logLevel this way)', () => {
    const { logger, lines } = capture('warn');
    const verbose = lazyChild(logger, { requestId: 'r2' }, { level: 'debug' });
    expect(verbose.isLevelEnabled('debug')).toBe(true);
    verbose.debug('now logged');
    expect(lines[0]).toMatchObject({ requestId: 'r2', msg: 'now logged' });
    const quiet = lazyChild(logger, { requestId: 'r3' });
    quiet.level = 'error';
    quiet.warn('dropped');
    expect(lines).toHaveLength(1);
  });
});
