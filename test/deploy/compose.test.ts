import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/**
 * deploy/compose.yaml, read as Compose reads it (YAML merge keys resolved). No Docker engine here, so the
 * properties that make `docker compose up` start in order and stop cleanly are checked one by one.
 */
type Service = {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test?: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }>;
  stop_grace_period?: string;
  read_only?: boolean;
  tmpfs?: string[];
  pull_policy?: string;
};
const compose = parse(fs.readFileSync('deploy/compose.yaml', 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const plinth = Object.entries(services).filter(([, s]) => s.image === services.migrate?.image);
const seconds = (d: string) => {
  const m = /^(\d+)(s|m)$/.exec(d);
  if (!m) throw new Error(`duration ${d}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
};

describe('deploy/compose.yaml', () => {
  it('builds the image once and reuses it (one build:, the same image: everywhere)', () => {
    const builders = Object.entries(services).filter(([, s]) => s.build !== undefined).map(([n]) => n);
    expect(builders).toEqual(['migrate']);
    expect(plinth.map(([n]) => n).sort()).toEqual(['api', 'migrate', 'worker']);
    for (const [name, s] of plinth) if (name !== 'migrate') expect(s.pull_policy, name).toBe('never');
  });

  it('every long-running service has a healthcheck; the one-off migrate says it has none on purpose', () => {
    for (const [name, s] of Object.entries(services)) {
      if (name === 'migrate') expect(s.healthcheck?.disable).toBe(true);
      else expect(s.healthcheck?.test?.length, name).toBeGreaterThan(0);
    }
  });

  it('starts in order: dependencies healthy, migration completed; the worker waits for Redis too', () => {
    expect(services.migrate!.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    for (const name of ['api', 'worker']) {
      expect(services[name]!.depends_on, name).toEqual({
        migrate: { condition: 'service_completed_successfully' },
        postgres: { condition: 'service_healthy' },
        redis: { condition: 'service_healthy' },
      });
      expect(services[name]!.environment!.MIGRATE_ON_START).toBe('false');
    }
    for (const s of Object.values(services)) {
      for (const dep of Object.values(s.depends_on ?? {})) expect(['service_healthy', 'service_completed_successfully']).toContain(dep.condition);
    }
  });

  it('stops cleanly: stop_grace_period covers SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS', () => {
    for (const name of ['api', 'worker']) {
      const s = services[name]!;
      const drain = (Number(s.environment!.SHUTDOWN_DELAY_MS ?? 0) + Number(s.environment!.SHUTDOWN_GRACE_MS ?? 10_000)) / 1000;
      expect(seconds(s.stop_grace_period ?? '10s'), name).toBeGreaterThan(drain);
    }
  });

  it('runs the image as production does: read-only root, /tmp writable, app role login, role by command', () => {
    for (const [name, s] of plinth) {
      expect(s.read_only, name).toBe(true);
      expect(s.tmpfs, name).toContain('/tmp');
      expect(s.environment!.DATABASE_APP_URL, name).toMatch(/^postgres:\/\/plinth_app:/);
    }
    expect(services.migrate!.command).toEqual(['migrate', '--set-app-password']);
    expect(services.api!.command).toEqual(['start']);
    expect(services.api!.environment!.PLINTH_ROLE).toBe('api');
    expect(services.worker!.command).toEqual(['worker']);
    expect(services.worker!.environment!.METRICS_PORT).toMatch(/^\d+$/);
  });
});
