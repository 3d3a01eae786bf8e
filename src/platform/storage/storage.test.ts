import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import Fastify from 'fastify';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFsStorage, StorageError, checkKey, type ObjectStorage } from './index.ts';
import { createS3Storage } from './s3-storage.ts';
import { storageRoutes } from './storage.routes.ts';

/** Lines streamed lazily: a large body that is never held in memory at once. */
function lines(n: number, width = 100): Readable {
  let i = 0;
  return new Readable({
    read() {
      if (i >= n) return this.push(null);
      this.push(`${String(i++).padStart(width - 1, '0')}\n`);
    },
  });
}

function failingAfter(n: number): Readable {
  let i = 0;
  return new Readable({
    read() {
      if (i++ >= n) return this.destroy(new Error('source failed'));
      this.push('x'.repeat(1000));
    },
  });
}

/**
 * A resumable upload whose writer died after uploading part 2 but before saving the state that includes it:
 * the successor uploads part 2 again (other bytes) from the saved state; the object holds the successor's
 * bytes only, and nothing is visible before completion.
 */
async function resumeAfterCrash(storage: ObjectStorage, key: string, readBack: () => Promise<Buffer>): Promise<void> {
  const size = Math.max(storage.minPartBytes, 1000);
  const part = (c: string, n: number) => Buffer.alloc(n, c);
  const first = await storage.uploadPart(await storage.beginUpload(key, { contentType: 'text/csv' }), part('a', size));
  const saved = JSON.parse(JSON.stringify(first)) as typeof first; // what the writer's checkpoint holds
  await storage.uploadPart(saved, part('x', size + 7)); // ... then it dies
  expect(await storage.exists(key)).toBe(false);
  // A part given as several buffers is written as their concatenation.
  let state = await storage.uploadPart(saved, [part('b', size - 3), part('b', 3)]);
  state = await storage.uploadPart(state, part('c', 10));
  expect(state.parts.map((p) => p.n)).toEqual([1, 2, 3]);
  expect(await storage.completeUpload(state)).toEqual({ bytes: 2 * size + 10 });
  expect((await readBack()).equals(Buffer.concat([part('a', size), part('b', size), part('c', 10)]))).toBe(true);

  // Abort drops the parts; aborting again (or an unknown upload) is not an error; nothing is left.
  const other = `${key}.aborted`;
  const dropped = await storage.uploadPart(await storage.beginUpload(other, { contentType: 'text/csv' }), part('d', 10));
  await storage.abortUpload(dropped);
  await storage.abortUpload(dropped);
  expect(await storage.exists(other)).toBe(false);
}

describe('storage keys', () => {
  it('refuses keys that could escape the root or are not plain paths', () => {
    for (const bad of ['../x', 'a/../../b', '/abs', 'a//b', '', 'a/./b', 'a\\b', 'a b', 'x'.repeat(600)]) {
      expect(() => checkKey(bad), bad).toThrow(StorageError);
    }
    expect(checkKey('exports/0190-ab/file.csv')).toBe('exports/0190-ab/file.csv');
  });
});

describe('filesystem storage + signed download route', () => {
  let dir: string;
  let fsStorage: ReturnType<typeof createFsStorage>;
  let app: ReturnType<typeof Fastify>;
  const secret = Buffer.from('test-secret-test-secret-test-secret!');

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-storage-'));
    fsStorage = createFsStorage({ root: dir, secret, publicUrl: 'http://files.test' });
    app = Fastify();
    await app.register(storageRoutes(fsStorage).plugin as any);
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const get = (link: string) => app.inject({ url: link.replace('http://files.test', '') });

  it('streams a write into place and serves it through a signed link only', async () => {
    const { bytes } = await fsStorage.put('exports/org/a.csv', lines(1000), { contentType: 'text/csv' });
    expect(bytes).toBe(100_000);
    expect(await fsStorage.exists('exports/org/a.csv')).toBe(true);
    const link = await fsStorage.signedUrl('exports/org/a.csv', { expiresInSec: 60, filename: 'tasks.csv', contentType: 'text/csv' });
    const res = await get(link);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-disposition']).toBe('attachment; filename="tasks.csv"');
    expect(res.headers['content-type']).toBe('text/csv');
    expect(res.body.length).toBe(100_000);

    // Any change to what the link grants breaks its signature.
    const u = new URL(link);
    for (const [k, v] of [['filename', 'other.csv'], ['type', 'text/html'], ['expires', String(Number(u.searchParams.get('expires')) + 999)], ['sig', 'AAAA']] as const) {
      const t = new URL(link);
      t.searchParams.set(k, v);
      expect((await get(t.toString())).statusCode, k).toBe(404);
    }
    const otherKey = link.replace('/files/exports/org/a.csv', '/files/exports/org/b.csv');
    expect((await get(otherKey)).statusCode).toBe(404);
    expect((await get(link.replace('/files/exports', '/files/../exports'))).statusCode).toBeGreaterThanOrEqual(400);
  });

  it('an expired link is 410, a deleted file is 410', async () => {
    await fsStorage.put('exports/org/old.csv', lines(3), { contentType: 'text/csv' });
    const expired = await fsStorage.signedUrl('exports/org/old.csv', { expiresInSec: -5, filename: 'old.csv', contentType: 'text/csv' });
    expect((await get(expired)).statusCode).toBe(410);
    const live = await fsStorage.signedUrl('exports/org/old.csv', { expiresInSec: 60, filename: 'old.csv', contentType: 'text/csv' });
    await fsStorage.delete('exports/org/old.csv');
    await fsStorage.delete('exports/org/old.csv');
    expect((await get(live)).statusCode).toBe(410);
  });

  it('a failed or aborted write leaves no file, partial or final', async () => {
    await expect(fsStorage.put('exports/org/fail.csv', failingAfter(50), { contentType: 'text/csv' })).rejects.toThrow('source failed');
    const ac = new AbortController();
    const p = fsStorage.put('exports/org/abort.csv', lines(10_000_000), { contentType: 'text/csv', signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await expect(p).rejects.toThrow();
    expect(fs.readdirSync(path.join(dir, 'exports/org')).sort()).toEqual(['a.csv']);
  });

  it('a resumable upload continues from a saved state after its writer died; abort leaves nothing', async () => {
    await resumeAfterCrash(fsStorage, 'exports/org/resumed.csv', async () => fs.readFileSync(path.join(dir, 'exports/org/resumed.csv')));
    // A state that vouches for more bytes than the partial file holds is refused, not silently padded.
    const s = await fsStorage.uploadPart(await fsStorage.beginUpload('exports/org/short.csv', { contentType: 'text/csv' }), Buffer.from('abc'));
    await expect(fsStorage.uploadPart({ ...s, bytes: 10 }, Buffer.from('d'))).rejects.toThrow(StorageError);
    await fsStorage.abortUpload(s);
    await expect(fsStorage.uploadPart(s, Buffer.from('d'))).rejects.toThrow(/not found/);
    expect(fs.readdirSync(path.join(dir, 'exports/org')).filter((f) => f.startsWith('resumed'))).toEqual(['resumed.csv']);
  });
});

describe('S3 storage against a local S3-compatible server (s3rver)', () => {
  let server: S3rver;
  let dir: string;
  let s3: ObjectStorage;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-s3rver-'));
    server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: 'exports', configs: [] }] });
    const { port } = (await server.run()) as { port: number };
    s3 = createS3Storage({
      bucket: 'exports',
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
  });
  afterAll(async () => {
    (server as unknown as { httpServer?: import('node:http').Server }).httpServer?.closeAllConnections();
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('multipart-uploads a stream larger than one part and presigns a download link', async () => {
    // 12 MB: three 5 MiB parts.
    const { bytes } = await s3.put('exports/org/big.csv', lines(120_000), { contentType: 'text/csv' });
    expect(bytes).toBe(12_000_000);
    expect(await s3.exists('exports/org/big.csv')).toBe(true);
    const link = await s3.signedUrl('exports/org/big.csv', { expiresInSec: 60, filename: 'big.csv', contentType: 'text/csv' });
    expect(link).toContain('X-Amz-Signature=');
    const res = await fetch(link);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="big.csv"');
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.length).toBe(12_000_000);
    expect(body.subarray(0, 100).toString()).toBe(`${'0'.repeat(99)}\n`);

    // The link expires (s3rver does not verify SigV4 signatures, so tampering is AWS's check, not this test's).
    expect(new URL(link).searchParams.get('X-Amz-Expires')).toBe('60');

    await s3.delete('exports/org/big.csv');
    expect(await s3.exists('exports/org/big.csv')).toBe(false);
    await s3.delete('exports/org/big.csv');
  });

  // 15 MiB through s3rver (three 5 MiB parts) is slow on a busy machine: with the services-run suite only.
  it.runIf(process.env.TEST_DATABASE_URL)('a resumable multipart upload continues from a saved state after its writer died', async () => {
    const key = 'exports/org/resumed.csv';
    await resumeAfterCrash(s3, key, async () => {
      const res = await fetch(await s3.signedUrl(key, { expiresInSec: 60, filename: 'r.csv', contentType: 'text/csv' }));
      return Buffer.from(await res.arrayBuffer());
    });
  }, 120_000);

  it('a failed source stream fails the upload and leaves no object', async () => {
    await expect(s3.put('exports/org/fail.csv', failingAfter(6000), { contentType: 'text/csv' })).rejects.toThrow();
    expect(await s3.exists('exports/org/fail.csv')).toBe(false);
  });
});
