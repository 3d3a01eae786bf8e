import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { checkFilename, checkKey, signLink, StorageError, type LinkOptions, type ObjectStorage, type PutOptions } from './storage.ts';

export interface FsStorageOptions {
  /** Root directory (`<PLINTH_DATA_DIR>/files` by default). */
  root: string;
  /** HMAC key of download links. */
  secret: Buffer;
  /** Where the API is reached: links are `<publicUrl>/files/<key>?…`. */
  publicUrl: string;
}

export interface FsStorage extends ObjectStorage {
  readonly kind: 'fs';
  readonly root: string;
  readonly secret: Buffer;
  /** Absolute path of a key (checked: always inside root). */
  pathOf(key: string): string;
}

/** Files under a directory; a write goes to `<key>.partial` and is renamed into place when complete. */
export function createFsStorage(opts: FsStorageOptions): FsStorage {
  const root = path.resolve(opts.root);
  const pathOf = (key: string) => {
    const p = path.resolve(root, checkKey(key));
    if (!p.startsWith(root + path.sep)) throw new StorageError('storage key escapes the root');
    return p;
  };
  return {
    kind: 'fs',
    root,
    secret: opts.secret,
    pathOf,
    async put(key: string, body: Readable, putOpts: PutOptions) {
      const target = pathOf(key);
      await fs.promises.mkdir(path.dirname(target), { recursive: true });
      const partial = `${target}.partial`;
      let bytes = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          bytes += chunk.length;
          done(null, chunk);
        },
      });
      try {
        await pipeline(body, count, fs.createWriteStream(partial), { signal: putOpts.signal });
        await fs.promises.rename(partial, target);
      } catch (err) {
        await fs.promises.rm(partial, { force: true });
        throw err;
      }
      return { bytes };
    },
    async delete(key: string) {
      await fs.promises.rm(pathOf(key), { force: true });
    },
    async exists(key: string) {
      return fs.promises.access(pathOf(key)).then(
        () => true,
        () => false,
      );
    },
    async signedUrl(key: string, link: LinkOptions) {
      checkKey(key);
      checkFilename(link.filename);
      const expires = Math.floor(Date.now() / 1000) + link.expiresInSec;
      const sig = signLink(opts.secret, key, expires, link.filename, link.contentType);
      const q = new URLSearchParams({ expires: String(expires), filename: link.filename, type: link.contentType, sig });
      return `${opts.publicUrl}/files/${key.split('/').map(encodeURIComponent).join('/')}?${q.toString()}`;
    },
  };
}
