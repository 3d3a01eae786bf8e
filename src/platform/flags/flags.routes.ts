import { Type, type Static } from '@sinclair/typebox';
import type { JsonValue } from '@openfeature/server-sdk';
import type { FastifyRequest } from 'fastify';
import { PLATFORM_ADMIN } from '../http/auth.ts';
import { actorOf } from '../http/actor.ts';
import { AppError } from '../http/errors.ts';
import { DateTime, Uuid } from '../http/schemas.ts';
import type { App } from '../http/server.ts';
import { jsonType, type FlagDefinition, type Flags } from './flags.ts';

const FlagKey = Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,99}$', description: 'Flag key, e.g. projects.new-board' });
const FlagValue = Type.Unknown({ description: 'Any JSON value; overrides, rules and rollouts must have the same JSON type as the default' });
const Percentage = Type.Number({ minimum: 0, maximum: 100, multipleOf: 0.01 });
const BucketBy = Type.Union([Type.Literal('org'), Type.Literal('user')], { description: 'Who is bucketed: the same org (or user) always gets the same answer' });
const Values = Type.Array(Type.Union([Type.String({ maxLength: 200 }), Type.Number(), Type.Boolean()]), { maxItems: 1000 });
const RuleSchema = Type.Object(
  {
    value: FlagValue,
    orgIds: Type.Optional(Type.Array(Uuid(), { maxItems: 1000 })),
    plans: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })),
    attributes: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_]{0,49}$' }), Values, { maxProperties: 20 })),
  },
  { additionalProperties: false },
);
const RolloutSchema = Type.Object({ value: FlagValue, percentage: Percentage, bucketBy: BucketBy }, { additionalProperties: false });
const Guard = Type.Object(
  {
    maxErrorRate: Type.Number({ minimum: 0, maximum: 1, description: 'Share of 5xx among requests given the rolled-out value that pauses the ramp' }),
    minRequests: Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Requests needed in the current step before the guard judges' }),
  },
  { additionalProperties: false },
);
const RampBody = Type.Object(
  {
    value: FlagValue,
    bucketBy: BucketBy,
    steps: Type.Array(Percentage, { minItems: 1, maxItems: 20, examples: [[1, 10, 50, 100]] }),
    everyMinutes: Type.Integer({ minimum: 1, maximum: 60 * 24 * 30 }),
    guard: Guard,
  },
  { additionalProperties: false },
);
const FlagSchema = Type.Object({
  key: Type.String(),
  description: Type.String(),
  defaultValue: FlagValue,
  rules: Type.Array(RuleSchema),
  rollout: Type.Union([RolloutSchema, Type.Null()]),
  ramp: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()]),
  killed: Type.Boolean(),
  rolloutFullSince: Type.Union([DateTime(), Type.Null()]),
  updatedAt: DateTime(),
});
const ChangeSchema = Type.Object({ id: Uuid(), action: Type.String(), actor: Type.String(), before: Type.Unknown(), after: Type.Unknown(), at: DateTime() });
const tags = ['Feature flags'];
const security = [{ bearer: [] }];
const KeyParams = Type.Object({ key: FlagKey });

/** Rules and rollouts leave the module typed by the schema they were validated with. */
const asBody = (f: FlagDefinition) => f as FlagDefinition & { rules: Static<typeof RuleSchema>[]; rollout: Static<typeof RolloutSchema> | null };
const actor = (req: FastifyRequest) => {
  const a = actorOf(req).actor;
  return `${a.type}:${a.id}`;
};

/** A value given for a flag must have the default's JSON type: a boolean flag never answers a string. */
function sameType(def: FlagDefinition, value: unknown, what: string): void {
  if (jsonType(def.defaultValue) !== jsonType(value)) {
    throw new AppError('FLAGS.TYPE_MISMATCH', 422, `Flag ${def.key} holds ${jsonType(def.defaultValue)} values; the ${what} is ${jsonType(value)}`);
  }
}

function found(def: FlagDefinition | undefined, key: string): FlagDefinition {
  if (!def) throw new AppError('FLAGS.NOT_FOUND', 404, `No flag ${key}`);
  return def;
}

/** Operator API for flags: definitions, per-org overrides, targeting, rollouts and ramps (platform administrators only). */
export function registerFlagRoutes(app: App, flags: Flags): void {
  const config = { permission: PLATFORM_ADMIN };

  app.get('/v1/admin/flags', {
    config,
    schema: { tags, security, operationId: 'listFlags', summary: 'List feature flags', response: { 200: Type.Object({ data: Type.Array(FlagSchema) }) } },
  }, async () => ({ data: (await flags.list()).map(asBody) }));

  app.get('/v1/admin/flags/stale', {
    config,
    schema: {
      tags, security, operationId: 'listStaleFlags',
      summary: 'Flags rolled out to 100 % for more than `days` days: candidates for removal from the code',
      querystring: Type.Object({ days: Type.Integer({ minimum: 0, maximum: 3650, default: 30 }) }, { additionalProperties: false }),
      response: { 200: Type.Object({ data: Type.Array(FlagSchema) }) },
    },
  }, async (req) => ({ data: (await flags.stale((req.query as { days: number }).days)).map(asBody) }));

  app.put('/v1/admin/flags/:key', {
    config,
    schema: {
      tags, security, operationId: 'defineFlag', summary: 'Create or change a flag and its default',
      params: KeyParams,
      body: Type.Object({ defaultValue: FlagValue, description: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
      response: { 200: FlagSchema },
    },
  }, async (req) => {
    const body = req.body as { defaultValue?: unknown; description?: string };
    if (body.defaultValue === undefined) throw new AppError('FLAGS.VALUE_REQUIRED', 400, 'defaultValue is required');
    const existing = await flags.get(req.params.key);
    if (existing && (existing.rollout || existing.rules.length > 0)) sameType(existing, body.defaultValue, 'new default');
    return asBody(await flags.define(req.params.key, body.defaultValue as JsonValue, body.description, actor(req)));
  });

  app.put('/v1/admin/flags/:key/rules', {
    config,
    schema: {
      tags, security, operationId: 'setFlagRules', summary: 'Replace the targeting rules (the first matching rule wins; all its conditions must hold)',
      params: KeyParams,
      body: Type.Object({ rules: Type.Array(RuleSchema, { maxItems: 100 }) }, { additionalProperties: false }),
      response: { 200: FlagSchema },
    },
  }, async (req) => {
    const { rules } = req.body as { rules: Static<typeof RuleSchema>[] };
    const def = found(await flags.get(req.params.key), req.params.key);
    for (const r of rules) sameType(def, r.value, 'rule value');
    return asBody(found(await flags.setRules(req.params.key, rules as never, actor(req)), req.params.key));
  });

  app.put('/v1/admin/flags/:key/rollout', {
    config,
    schema: {
      tags, security, operationId: 'setFlagRollout', summary: 'Give a fixed percentage of orgs (or users) the value; ends a running ramp',
      params: KeyParams, body: RolloutSchema, response: { 200: FlagSchema },
    },
  }, async (req) => {
    const rollout = req.body as Static<typeof RolloutSchema>;
    sameType(found(await flags.get(req.params.key), req.params.key), rollout.value, 'rollout value');
    return asBody(found(await flags.setRollout(req.params.key, rollout as never, actor(req)), req.params.key));
  });

  app.delete('/v1/admin/flags/:key/rollout', {
    config,
    schema: { tags, security, operationId: 'removeFlagRollout', summary: 'Remove the rollout (and its ramp): everyone gets the default again', params: KeyParams, response: { 200: FlagSchema } },
  }, async (req) => asBody(found(await flags.setRollout(req.params.key, null, actor(req)), req.params.key)));

  app.put('/v1/admin/flags/:key/ramp', {
    config,
    schema: {
      tags, security, operationId: 'startFlagRamp',
      summary: 'Roll the value out in steps (e.g. 1 → 10 → 50 → 100 %), one step every `everyMinutes`, paused automatically when its error-rate guard trips',
      params: KeyParams, body: RampBody, response: { 200: FlagSchema },
    },
  }, async (req) => {
    const body = req.body as Static<typeof RampBody>;
    if (body.steps.some((s, i) => i > 0 && s <= body.steps[i - 1]!)) throw new AppError('FLAGS.RAMP_STEPS', 422, 'Ramp steps must increase');
    sameType(found(await flags.get(req.params.key), req.params.key), body.value, 'ramp value');
    return asBody(found(await flags.ramp(req.params.key, body as never, actor(req)), req.params.key));
  });

  for (const [path, paused, operationId] of [['pause', true, 'pauseFlagRamp'], ['resume', false, 'resumeFlagRamp']] as const) {
    app.post(`/v1/admin/flags/:key/ramp/${path}`, {
      config,
      schema: { tags, security, operationId, summary: `${paused ? 'Pause' : 'Resume'} the flag's ramp`, params: KeyParams, response: { 200: FlagSchema } },
    }, async (req) => {
      const def = found(await flags.get(req.params.key), req.params.key);
      if (!def.ramp) throw new AppError('FLAGS.NO_RAMP', 409, `Flag ${def.key} has no running ramp`);
      if (!paused && def.killed) throw new AppError('FLAGS.KILLED', 409, `Flag ${def.key} is killed; turn the kill switch off first`);
      return asBody((await flags.pauseRamp(def.key, paused, actor(req))) ?? def);
    });
  }

  app.put('/v1/admin/flags/:key/kill', {
    config,
    schema: {
      tags, security, operationId: 'setFlagKillSwitch', summary: 'Kill switch: everyone gets the default at once (overrides, rules and rollout ignored; a ramp pauses)',
      params: KeyParams, body: Type.Object({ killed: Type.Boolean() }, { additionalProperties: false }), response: { 200: FlagSchema },
    },
  }, async (req) => asBody(found(await flags.kill(req.params.key, (req.body as { killed: boolean }).killed, actor(req)), req.params.key)));

  app.get('/v1/admin/flags/:key/changes', {
    config,
    schema: {
      tags, security, operationId: 'listFlagChanges', summary: 'Every change of the flag, newest first: who, what, before and after',
      params: KeyParams,
      querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 }) }, { additionalProperties: false }),
      response: { 200: Type.Object({ data: Type.Array(ChangeSchema) }) },
    },
  }, async (req) => {
    found(await flags.get(req.params.key), req.params.key);
    const changes = await flags.changes(req.params.key, (req.query as { limit: number }).limit);
    return { data: changes };
  });

  app.put('/v1/admin/flags/:key/orgs/:orgId', {
    config,
    schema: {
      tags, security, operationId: 'setFlagOverride', summary: 'Override a flag for one organization',
      params: Type.Object({ key: FlagKey, orgId: Uuid() }),
      body: Type.Object({ value: FlagValue }, { additionalProperties: false }),
      response: { 204: Type.Null() },
    },
  }, async (req, reply) => {
    const { key, orgId } = req.params;
    const value = (req.body as { value?: unknown }).value;
    if (value === undefined) throw new AppError('FLAGS.VALUE_REQUIRED', 400, 'value is required');
    sameType(found(await flags.get(key), key), value, 'override');
    await flags.setOverride(orgId, key, value as JsonValue, actor(req));
    return reply.code(204).send(null);
  });

  app.delete('/v1/admin/flags/:key/orgs/:orgId', {
    config,
    schema: {
      tags, security, operationId: 'removeFlagOverride', summary: 'Remove an organization override',
      params: Type.Object({ key: FlagKey, orgId: Uuid() }),
      response: { 204: Type.Null() },
    },
  }, async (req, reply) => {
    if (!(await flags.clearOverride(req.params.orgId, req.params.key, actor(req)))) {
      throw new AppError('FLAGS.OVERRIDE_NOT_FOUND', 404, 'No such override');
    }
    return reply.code(204).send(null);
  });
}
