import helmet from '@fastify/helmet';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import FindMyWay from 'find-my-way';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { LifecycleState } from '../lifecycle.ts';
import { newId } from '../ids.ts';
import { errorHandler, sendProblem } from './errors.ts';
import { documentEdgeProtection } from './openapi-edge.ts';
import { ProblemSchema } from './schemas.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The permission a caller needs (e.g. 'projects:write'); every /v1 route declares this or `public`. */
    permission?: string;
    /** Explicitly reachable without authentication (signup, login, health). */
    public?: boolean;
  }
}

/** One registered method + path, for tests that walk the whole HTTP surface (permissions, isolation). */
export interface RegisteredRoute {
  method: string;
  url: string;
  config: { permission?: string; public?: boolean };
  schema?: { params?: unknown; querystring?: unknown; body?: unknown; hide?: boolean };
}

declare module 'fastify' {
  interface FastifyInstance {
    registeredRoutes: RegisteredRoute[];
  }
}

export type App = FastifyInstance<any, any, any, Logger, TypeBoxTypeProvider>;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * The HTTP kernel every module's routes live in: request ids, problem+json for every error (including
 * Fastify's own 404/405/413/415), security headers, body and time limits, OpenAPI and docs.
 */
export async function createHttpServer(opts: {
  config: Config;
  logger: Logger;
  lifecycle: LifecycleState;
}): Promise<App> {
  const { config, logger, lifecycle } = opts;
  const app = Fastify({
    loggerInstance: logger,
    // One 'request completed' line per request (onResponse below) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    bodyLimit: config.bodyLimitBytes,
    requestTimeout: config.requestTimeoutMs,
    // Node checks request timeouts every 30 s by default, so a slow client could hold a socket that much longer.
    http: { connectionsCheckingInterval: Math.min(1_000, config.requestTimeoutMs) },
    connectionTimeout: config.requestTimeoutMs,
    keepAliveTimeout: 72_000,
    trustProxy: config.trustProxy,
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    requestIdHeader: false,
    genReqId: (req) => {
      const header = req.headers['x-request-id'];
      return typeof header === 'string' && REQUEST_ID.test(header) ? header : newId();
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  // JSON only: a text/plain body is a client mistake (415), not a string to validate.
  app.removeContentTypeParser('text/plain');
  app.addSchema(ProblemSchema);
  app.setErrorHandler(errorHandler);

  // Which methods exist for a path, so an unknown method on a known path is 405 with Allow, not 404.
  const methodRouter = FindMyWay();
  app.decorate('registeredRoutes', [] as RegisteredRoute[]);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const m of methods) {
      if (m === 'HEAD' || m === 'OPTIONS') continue;
      app.registeredRoutes.push({ method: m, url: route.url, config: (route.config ?? {}) as RegisteredRoute['config'], schema: route.schema as RegisteredRoute['schema'] });
      try {
        methodRouter.on(m as any, route.url, () => {});
      } catch {
        // same path+method registered twice with different constraints: already known
      }
    }
    // Document every route's error shape once, here, instead of in each module.
    if (route.schema && !route.schema.hide) {
      const response = { ...((route.schema.response as Record<string, unknown>) ?? {}) };
      response['4XX'] ??= { $ref: 'Problem#', description: 'Client error (RFC 9457 problem)' };
      response['5XX'] ??= { $ref: 'Problem#', description: 'Server error or overload (RFC 9457 problem)' };
      documentEdgeProtection(route, response);
      route.schema.response = response;
      // Every non-public /v1 route authenticates with a bearer token; say so in OpenAPI once, here.
      if (route.url.startsWith('/v1') && !route.config?.public) {
        (route.schema as { security?: unknown }).security ??= [{ bearer: [] }];
      }
    }
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '/';
    const allowed = METHODS.filter((m) => m !== request.method && methodRouter.find(m, path));
    if (allowed.length > 0) {
      reply.header('allow', allowed.join(', '));
      return sendProblem(reply, 405, 'HTTP.METHOD_NOT_ALLOWED', `${request.method} is not allowed here; use ${allowed.join(', ')}`);
    }
    return sendProblem(reply, 404, 'HTTP.NOT_FOUND', `No route ${request.method} ${path}`);
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (lifecycle.closing) {
      reply.header('connection', 'close').header('retry-after', '1');
      return sendProblem(reply, 503, 'HTTP.SHUTTING_DOWN', 'This instance is shutting down; retry the request');
    }
  });

  // While draining, each response closes its connection so keep-alive clients reconnect to another
  // instance and the listener can close without waiting for idle sockets to time out.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (lifecycle.draining) reply.header('connection', 'close');
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    const level = reply.statusCode >= 500 ? 'error' : 'info';
    request.log[level](
      {
        method: request.method,
        route: request.routeOptions.url ?? 'unmatched',
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request completed',
    );
  });

  await app.register(helmet, {
    // JSON API: nothing should be framed or executed; the docs page sets its own CSP below.
    contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-origin' },
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Plinth API',
        version: '1.0.0',
        description:
          'Multi-tenant SaaS backend. Errors are RFC 9457 problem+json with `code` and `requestId`. ' +
          'Send `X-Request-Id` to correlate; it is echoed on every response.',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'Session token or API key' },
        },
      },
    },
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    transformStaticCSP: (header) => header,
    uiConfig: { deepLinking: true },
  });
  app.get('/openapi.json', { schema: { hide: true }, config: { public: true } }, async () => app.swagger());

  return app;
}
