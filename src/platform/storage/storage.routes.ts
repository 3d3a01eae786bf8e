import fs from 'node:fs';
import { Type } from '@sinclair/typebox';
import { AppError } from '../http/errors.ts';
import type { ModuleRoutes } from '../http/module-routes.ts';
import type { App } from '../http/server.ts';
import type { FsStorage } from './fs-storage.ts';
import { checkKey, verifyLink } from './storage.ts';

const Query = Type.Object(
  {
    expires: Type.Integer({ minimum: 0, maximum: 99_999_999_999 }),
    filename: Type.String({ minLength: 1, maxLength: 128 }),
    type: Type.String({ minLength: 1, maxLength: 100 }),
    sig: Type.String({ minLength: 1, maxLength: 100 }),
  },
  { additionalProperties: false },
);

/**
 * `GET /files/<key>?expires&filename&type&sig`: the filesystem adapter's download, authorized by the link's
 * HMAC alone (no bearer token: links are opened by browsers and mail clients). Not under /v1: it is a
 * signed link, not an API operation. A bad or expired link is 404 / 410 and never says which file exists.
 */
export function storageRoutes(storage: FsStorage): ModuleRoutes {
  const plugin = async (app: App) => {
    app.get(
      '/files/*',
      {
        config: { public: true },
        schema: {
          // A link the API hands out (export status), not an operation a client composes: kept out of OpenAPI.
          hide: true,
          tags: ['storage'],
          summary: 'Download a file through a signed, expiring link',
          querystring: Query,
          params: Type.Object({ '*': Type.String({ minLength: 1, maxLength: 512 }) }),
          response: { 200: Type.Any({ description: 'The file (attachment)' }) },
        },
      },
      async (request, reply) => {
        const key = (request.params as { '*': string })['*'];
        const q = request.query as { expires: number; filename: string; type: string; sig: string };
        try {
          checkKey(key);
        } catch {
          throw new AppError('STORAGE.LINK_INVALID', 404, 'This download link is not valid');
        }
        const verdict = verifyLink(storage.secret, { key, expires: q.expires, filename: q.filename, contentType: q.type, sig: q.sig });
        if (verdict === 'bad-signature') throw new AppError('STORAGE.LINK_INVALID', 404, 'This download link is not valid');
        if (verdict === 'expired') throw new AppError('STORAGE.LINK_EXPIRED', 410, 'This download link has expired');
        const file = storage.pathOf(key);
        const stat = await fs.promises.stat(file).catch(() => null);
        if (!stat?.isFile()) throw new AppError('STORAGE.LINK_EXPIRED', 410, 'This file is no longer available');
        return reply
          .header('content-type', q.type)
          .header('content-length', String(stat.size))
          .header('content-disposition', `attachment; filename="${q.filename}"`)
          .header('cache-control', 'private, no-store')
          .send(fs.createReadStream(file));
      },
    );
  };
  return { name: 'storage', prefix: '', plugin: plugin as unknown as ModuleRoutes['plugin'] };
}
