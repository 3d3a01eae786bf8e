import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { PLATFORM_ADMIN, type Authenticator } from '../http/auth.ts';
import { AppError, sendProblem } from '../http/errors.ts';
import { Page, Uuid } from '../http/schemas.ts';
import type { App } from '../http/server.ts';
import { isUuid } from '../ids.ts';
import type { EventBus } from './event-bus.ts';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const DeadJobSchema = Type.Object({
  id: Uuid('Delivery id (use it to redrive)'),
  eventId: Uuid(),
  eventName: Type.String(),
  consumer: Type.String(),
  tenantId: Nullable(Type.String()),
  attempts: Type.Integer(),
  maxAttempts: Type.Integer(),
  lastError: Nullable(Type.String()),
  failedAt: Type.String({ format: 'date-time' }),
});

const encodeCursor = (id: string) => Buffer.from(id).toString('base64url');
function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isUuid(id)) throw new AppError('HTTP.BAD_CURSOR', 400, 'The cursor is invalid');
  return id;
}

/** Operator API for dead-lettered jobs, under /v1 so the kernel's authorization applies (platform admins only). */
export function jobsAdminRoutes(bus: EventBus): FastifyPluginAsync {
  return async (app: FastifyInstance) => {
    const r = app as unknown as App;
    r.get(
      '/dead',
      {
        config: { permission: PLATFORM_ADMIN },
        schema: {
          tags: ['admin'],
          summary: 'List dead-lettered jobs (deliveries that exhausted their attempts)',
          security: [{ bearer: [] }],
          querystring: Type.Object(
            {
              limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
              cursor: Type.Optional(Type.String({ maxLength: 200 })),
            },
            { additionalProperties: false },
          ),
          response: { 200: Page(DeadJobSchema) },
        },
      },
      async (request) => {
        const { limit, cursor } = request.query as { limit: number; cursor?: string };
        const page = await bus.listDead({ limit, after: cursor ? decodeCursor(cursor) : undefined });
        return { data: page.data, nextCursor: page.nextCursor ? encodeCursor(page.nextCursor) : null };
      },
    );
    r.post(
      '/:id/redrive',
      {
        config: { permission: PLATFORM_ADMIN },
        schema: {
          tags: ['admin'],
          summary: 'Send a dead job back for processing, with its attempts reset',
          security: [{ bearer: [] }],
          params: Type.Object({ id: Uuid() }),
          response: { 202: Type.Object({ ...DeadJobSchema.properties, status: Type.Literal('pending') }) },
        },
      },
      async (request, reply) => {
        const job = await bus.redrive((request.params as { id: string }).id);
        return reply.code(202).send({ ...job, status: 'pending' as const });
      },
    );
  };
}

/** Answers directly (not by throwing): the dashboard's routes have Bull Board's own error handler. */
async function requirePlatformAdmin(authenticator: Authenticator, request: FastifyRequest, reply: FastifyReply) {
  const principal = await authenticator.authenticate(request);
  if (!principal) {
    reply.header('www-authenticate', 'Bearer');
    return sendProblem(reply, 401, 'AUTH.UNAUTHENTICATED', 'A valid bearer token is required');
  }
  if (!principal.isPlatformAdmin) return sendProblem(reply, 403, 'AUTH.FORBIDDEN', 'Platform administrators only');
  request.principal = principal;
}

export const QUEUES_PATH = '/admin/queues';

/**
 * Bull Board at /admin/queues when Redis is configured; in the embedded default a JSON view of the
 * in-process queues. Outside /v1 the kernel's hook does not apply, so this prefix checks the caller itself.
 */
export async function registerQueueDashboard(app: App, bus: EventBus, authenticator: Authenticator): Promise<void> {
  await app.register(
    async (scope) => {
      scope.addHook('onRequest', async (request, reply) => requirePlatformAdmin(authenticator, request, reply));
      const bull = bus.bull();
      if (!bull) {
        scope.get('/', { schema: { hide: true } }, async () => ({
          ...(await bus.inspect()),
          note: 'Embedded mode: jobs run in this process (no Redis). Set REDIS_URL for BullMQ and the Bull Board dashboard.',
        }));
        return;
      }
      const serverAdapter = new FastifyAdapter();
      serverAdapter.setBasePath(QUEUES_PATH);
      const adapters = () => bull.queues(bus.consumers()).map((q) => new BullMQAdapter(q));
      const board = createBullBoard({ queues: adapters(), serverAdapter });
      // Consumers may subscribe after the app is built; keep the board's queue list current.
      let known = bus.consumers().join(',');
      scope.addHook('preHandler', async () => {
        const now = bus.consumers().join(',');
        if (now !== known) {
          known = now;
          board.replaceQueues(adapters());
        }
      });
      // The dashboard is an HTML app: relax the API's `default-src 'none'` for its own scripts and styles.
      scope.addHook('onSend', async (_request, reply, payload) => {
        reply.header(
          'content-security-policy',
          "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; img-src 'self' data:; frame-ancestors 'none'",
        );
        return payload;
      });
      await scope.register(serverAdapter.registerPlugin() as any);
    },
    { prefix: QUEUES_PATH },
  );
}
