import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import FindMyWay from 'find-my-way';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { LifecycleState } from '../lifecycle.ts';
import { newId } from '../ids.ts';
import { lazyChild } from '../observability/lazy-logger.ts';
import { createAdmission } from './concurrency-limit.ts';
import { buildProblem, errorHandler, sendProblem } from './errors.ts';
import { registerJsonParser, validatorCompilerFactory } from './input.ts';
import { documentEdgeProtection } from './openapi-edge.ts';
import { createOperationIds } from './openapi-ids.ts';
import { createLazyCompilers, type LazyCompilers } from './lazy-compile.ts';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import { ProblemSchema } from './schemas.ts';
import { securityHeaders } from './security-headers.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The permission a caller needs (e.g. 'projects:write'); every /v1 route declares this or `public`. */
    permission?: string;
    /** Explicitly reachable without authentication (signup, login, health). */
    public?: boolean;
    /**
     * The response carries a secret (token, API key, signing secret): `Cache-Control: no-store`. Implied
     * for any route whose success response schema has a `token` or `secret` property.
     */
    sensitive?: boolean;
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
    /** Compiles the route schemas not used yet (they compile on first use; see lazy-compile.ts). */
    warmUpSchemas(): Promise<number>;
  }
}

export type App = FastifyInstance<any, any, any, Logger, TypeBoxTypeProvider>;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Longest path parameter the router matches (a UUID is 36; invitation tokens are under 100). */
export const MAX_PARAM_LENGTH = 200;

/** True when a 2xx response schema has a `token` or `secret` property (login, signup, API key, webhook secret). */
function carriesSecret(response: unknown): boolean {
  if (!response || typeof response !== 'object') return false;
  return Object.entries(response as Record<string, { properties?: Record<string, unknown> }>).some(
    ([status, schema]) => /^2/.test(status) && schema?.properties !== undefined && ('token' in schema.properties || 'secret' in schema.properties),
  );
}

/**
 * Node's HTTP parser refused the request (oversized headers, malformed request line) before Fastify saw
 * it: answer problem+json with a fresh request id and the security headers, then close.
 */
function writeClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, detail] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'HTTP.HEADERS_TOO_LARGE', 'The request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'HTTP.REQUEST_TIMEOUT', 'The request was not received in time']
        : [400, 'HTTP.BAD_REQUEST', 'The request is malformed'];
  const requestId = newId();
  const body = JSON.stringify(buildProblem(status, code, detail, requestId));
  const headers = [
    ['content-type', 'application/problem+json; charset=utf-8'],
    ['content-length', String(Buffer.byteLength(body))],
    ['x-request-id', requestId],
    ['connection', 'close'],
    ...securityHeaders(),
  ];
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body}`);
  } else {
    socket.destroy(err);
  }
}
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
  const compilers = createLazyCompilers();
  // Load shedding in the HTTP server's request listener, before anything of Fastify runs (concurrency-limit.ts).
  const admission = config.edge.concurrencyLimit.enabled
    ? createAdmission(config.edge.concurrencyLimit, { logger, headers: securityHeaders(), draining: () => lifecycle.draining, newId })
    : undefined;
  const app = Fastify({
    ...(admission
      ? {
          // What Fastify does without a factory (lib/server.js), with admission in front of its handler.
          serverFactory: (handler: (req: IncomingMessage, res: ServerResponse) => void, options: { keepAliveTimeout?: number; requestTimeout?: number; connectionTimeout?: number }) => {
            const server = createServer({ connectionsCheckingInterval: Math.min(1_000, config.requestTimeoutMs) }, (req, res) => {
              if (admission.admit(req, res)) handler(req, res);
            });
            server.keepAliveTimeout = options.keepAliveTimeout ?? 72_000;
            server.requestTimeout = options.requestTimeout ?? config.requestTimeoutMs;
            server.setTimeout(options.connectionTimeout ?? config.requestTimeoutMs);
            return server;
          },
        }
      : {}),
    loggerInstance: logger,
    // One 'request completed' line per request (onResponse below) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    // Made when the request first logs at an enabled level, not for every request (lazy-logger.ts).
    childLoggerFactory: (parent, bindings, opts) => lazyChild(parent as Logger, bindings, opts),
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
    // Bodies validated without type coercion, query/params with it; global string/number/date rules (input.ts).
    // Both compiled on first use, then warmed in the background (lazy-compile.ts): a faster cold start.
    schemaController: { compilersFactory: { buildValidator: validatorCompilerFactory(compilers) as never, buildSerializer: lazySerializerFactory(compilers) as never } },
    // Errors the router raises before any hook (bad percent-encoding, over-long parameter) and the ones
    // Node's parser raises before Fastify (oversized headers): problem+json with a request id too.
    frameworkErrors: (error, request, reply) => {
      reply.header('x-request-id', request.id);
      for (const [name, value] of securityHeaders()) reply.header(name, value);
      if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
        return sendProblem(reply, 414, 'HTTP.PARAM_TOO_LONG', `A path parameter is longer than ${MAX_PARAM_LENGTH} characters`);
      }
      if (error.code === 'FST_ERR_BAD_URL') return sendProblem(reply, 400, 'HTTP.BAD_URL', 'The URL is malformed (bad percent-encoding)');
      request.log.error({ err: error }, 'router error');
      return sendProblem(reply, 500, 'HTTP.INTERNAL', 'The server could not complete the request');
    },
    clientErrorHandler: writeClientError,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  // JSON only: a text/plain body is a client mistake (415), not a string to validate.
  app.removeContentTypeParser('text/plain');
  registerJsonParser(app);
  app.addSchema(ProblemSchema);
  app.setErrorHandler(errorHandler);

  // Which methods exist for a path, so an unknown method on a known path is 405 with Allow, not 404.
  app.decorate('warmUpSchemas', () => compilers.warmUp());
  const methodRouter = FindMyWay();
  const claimOperationId = createOperationIds();
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
    // A response that hands out a secret must never sit in a browser or proxy cache.
    if (carriesSecret(route.schema?.response)) route.config = { ...(route.config ?? {}), sensitive: true };
    // Document every route's error shape once, here, instead of in each module.
    if (route.schema && !route.schema.hide) {
      const response = { ...((route.schema.response as Record<string, unknown>) ?? {}) };
      response['4XX'] ??= { $ref: 'Problem#', description: 'Client error (RFC 9457 problem)' };
      response['5XX'] ??= { $ref: 'Problem#', description: 'Server error or overload (RFC 9457 problem)' };
      documentEdgeProtection(route, response);
      route.schema.response = response;
      // Every non-public /v1 route authenticates with a bearer token; say so in OpenAPI once, here (and
      // that a public one needs nothing, rather than leaving it undeclared).
      if (route.url.startsWith('/v1') || route.config?.public) {
        (route.schema as { security?: unknown }).security ??= route.config?.public ? [] : [{ bearer: [] }];
      }
      const documented = methods.filter((m) => m !== 'HEAD' && m !== 'OPTIONS');
      if (documented.length === 1) {
        const schema = route.schema as { operationId?: string };
        schema.operationId = claimOperationId(documented[0]!, route.url, schema.operationId);
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
  app.addHook('onSend', async (request, reply, payload) => {
    if (lifecycle.draining) reply.header('connection', 'close');
    if (request.routeOptions.config?.sensitive) reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
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

  // helmet's headers, computed once: @fastify/helmet rebuilt helmet's middleware (and parsed the CSP) for
  // every request. Set on the raw response as helmet does, so a route's own header (the docs page's CSP)
  // still replaces one of them.
  const staticHeaders = securityHeaders();
  app.addHook('onRequest', (_request, reply, done) => {
    const raw = reply.raw;
    for (let i = 0; i < staticHeaders.length; i++) raw.setHeader(staticHeaders[i]![0], staticHeaders[i]![1]);
    done();
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Plinth API',
        version: '1.0.0',
        license: { name: 'Proprietary', identifier: 'LicenseRef-Proprietary' },
        description:
          'Multi-tenant SaaS backend. Errors are RFC 9457 problem+json with `code` and `requestId`. ' +
          'Send `X-Request-Id` to correlate; it is echoed on every response.',
      },
      // Relative: the document describes the instance that serves it, wherever it is deployed.
      servers: [{ url: '/', description: 'The Plinth instance serving this document' }],
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

  if (admission) app.addHook('onClose', async () => admission.close());

  return app;
}

/** Fastify's fast-json-stringify serializer compiler, each serializer built on its first response. */
function lazySerializerFactory(compilers: LazyCompilers) {
  const selector = SerializerSelector();
  return (externalSchemas: unknown, options: unknown) => {
    const build = selector(externalSchemas as never, options as never);
    return (route: unknown) => compilers.lazily(() => build(route as never) as (data: unknown) => string).call;
  };
}
