import { Type } from '@sinclair/typebox';
import type { JsonValue } from '@openfeature/server-sdk';
import { PLATFORM_ADMIN } from '../http/auth.ts';
import { AppError } from '../http/errors.ts';
import { Uuid } from '../http/schemas.ts';
import type { App } from '../http/server.ts';
import type { Flags } from './flags.ts';

const FlagKey = Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,99}$', description: 'Flag key, e.g. projects.new-board' });
const FlagValue = Type.Unknown({ description: 'Any JSON value; overrides must have the same JSON type as the default' });
const FlagSchema = Type.Object({
  key: Type.String(),
  description: Type.String(),
  defaultValue: FlagValue,
  updatedAt: Type.String({ format: 'date-time' }),
});
const tags = ['Feature flags'];
const security = [{ bearer: [] }];

function jsonType(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'object' : typeof v;
}

/** Operator API for flags: definitions and per-org overrides (platform administrators only). */
export function registerFlagRoutes(app: App, flags: Flags): void {
  const config = { permission: PLATFORM_ADMIN };
  const toJson = (f: Awaited<ReturnType<Flags['list']>>[number]) => ({ ...f, updatedAt: f.updatedAt.toISOString() });

  app.get('/v1/admin/flags', {
    config,
    schema: { tags, security, summary: 'List feature flags', response: { 200: Type.Object({ data: Type.Array(FlagSchema) }) } },
  }, async () => ({ data: (await flags.list()).map(toJson) }));

  app.put('/v1/admin/flags/:key', {
    config,
    schema: {
      tags, security, summary: 'Create or change a flag and its default',
      params: Type.Object({ key: FlagKey }),
      body: Type.Object({ defaultValue: FlagValue, description: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
      response: { 200: FlagSchema },
    },
  }, async (req) => {
    const body = req.body as { defaultValue?: unknown; description?: string };
    if (body.defaultValue === undefined) throw new AppError('FLAGS.VALUE_REQUIRED', 400, 'defaultValue is required');
    return toJson(await flags.define(req.params.key, body.defaultValue as JsonValue, body.description));
  });

  app.put('/v1/admin/flags/:key/orgs/:orgId', {
    config,
    schema: {
      tags, security, summary: "Override a flag for one organization",
      params: Type.Object({ key: FlagKey, orgId: Uuid() }),
      body: Type.Object({ value: FlagValue }, { additionalProperties: false }),
      response: { 204: Type.Null() },
    },
  }, async (req, reply) => {
    const { key, orgId } = req.params;
    const value = (req.body as { value?: unknown }).value;
    if (value === undefined) throw new AppError('FLAGS.VALUE_REQUIRED', 400, 'value is required');
    const def = (await flags.list()).find((f) => f.key === key);
    if (!def) throw new AppError('FLAGS.NOT_FOUND', 404, `No flag ${key}`);
    if (jsonType(def.defaultValue) !== jsonType(value)) {
      throw new AppError('FLAGS.TYPE_MISMATCH', 422, `Flag ${key} holds ${jsonType(def.defaultValue)} values`);
    }
    await flags.setOverride(orgId, key, value as JsonValue);
    return reply.code(204).send(null);
  });

  app.delete('/v1/admin/flags/:key/orgs/:orgId', {
    config,
    schema: {
      tags, security, summary: 'Remove an organization override',
      params: Type.Object({ key: FlagKey, orgId: Uuid() }),
      response: { 204: Type.Null() },
    },
  }, async (req, reply) => {
    if (!(await flags.clearOverride(req.params.orgId, req.params.key))) {
      throw new AppError('FLAGS.OVERRIDE_NOT_FOUND', 404, 'No such override');
    }
    return reply.code(204).send(null);
  });
}
