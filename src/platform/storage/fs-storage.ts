import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { checkFilename, checkKey, signLink, StorageError, type LinkOptions, type ObjectStorage, type PutOptions, type UploadState } from './storage.ts';

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
  /** The partial file of a resumable upload, cut back to the bytes its state vouches for (later bytes: a lost part). */
  async function openAt(state: UploadState): Promise<fs.promises.FileHandle> {
    const fh = await fs.promises.open(`${pathOf(state.key)}.partial`, 'r+').catch((err: NodeJS.ErrnoException) => {
      throw new StorageError(err.code === 'ENOENT' ? `upload of ${state.key} not found (aborted or completed)` : err.message);
    });
    try {
      const { size } = await fh.stat();
      if (size < state.bytes) throw new StorageError(`upload of ${state.key} holds ${size} bytes, its state ${state.bytes}`);
      if (size > state.bytes) await fh.truncate(state.bytes);
      return fh;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }
  return {
    kind: 'fs',
    root,
    minPartBytes: 1,
    async beginUpload(key: string, putOpts: PutOptions) {
      const target = pathOf(key);
      await fs.promises.mkdir(path.dirname(target), { recursive: true });
      await (await fs.promises.open(`${target}.partial`, 'w')).close();
      return { key, contentType: putOpts.contentType, bytes: 0, parts: [] };
    },
    async uploadPart(state: UploadState, part: Buffer | Buffer[]) {
      const fh = await openAt(state);
      let written = 0;
      try {
        // One writev per run of buffers (IOV_MAX, 1024 on Linux) rather than one write, and one trip through
        // libuv's thread pool, per buffer: a part is often a hundred or more COPY blocks.
        let rest = Array.isArray(part) ? part.filter((b) => b.length > 0) : [part];
        while (rest.length > 0) {
          const run = rest.slice(0, 1024);
          let n = (await fh.writev(run, state.bytes + written)).bytesWritten;
          written += n;
          // A short write (rare on files) continues from the first byte not written.
          let i = 0;
          while (i < run.length && n >= run[i]!.length) n -= run[i++]!.length;
          rest = i < run.length ? [run[i]!.subarray(n), ...run.slice(i + 1), ...rest.slice(run.length)] : rest.slice(run.length);
        }
        // Durable before the caller records it: a checkpoint never vouches for bytes a power loss could drop.
        await fh.datasync();
      } finally {
        await fh.close();
      }
      return { ...state, bytes: state.bytes + written, parts: [...state.parts, { n: state.parts.length + 1, bytes: written }] };
    },
    async completeUpload(state: UploadState) {
      const fh = await openAt(state);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      const target = pathOf(state.key);
      await fs.promises.rename(`${target}.partial`, target);
      return { bytes: state.bytes };
    },
    async abortUpload(state: UploadState) {
      await fs.promises.rm(`${pathOf(state.key)}.partial`, { force: true });
    },
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
