import type { FastifyPluginAsync } from 'fastify';
import type { App } from './server.ts';

/** What a module contributes to the HTTP surface: an encapsulated plugin mounted under a prefix. */
export interface ModuleRoutes {
  name: string;
  prefix: string;
  plugin: FastifyPluginAsync<any>;
}

/** A module's routes are written against the typed App; this adapts them to Fastify's plugin type. */
export function asPlugin(plugin: (app: App) => Promise<void>): FastifyPluginAsync<any> {
  return plugin as unknown as FastifyPluginAsync<any>;
}
