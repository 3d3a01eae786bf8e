import path from 'node:path';
import { createFsStorage, type FsStorage } from './fs-storage.ts';
import type { S3StorageOptions } from './s3-storage.ts';
import type { ObjectStorage } from './storage.ts';
import type { StorageConfig } from '../config.ts';
import type { ModuleRoutes } from '../http/module-routes.ts';
import { storageRoutes } from './storage.routes.ts';

export * from './storage.ts';
export { createFsStorage, type FsStorage } from './fs-storage.ts';
export type { S3StorageOptions } from './s3-storage.ts';

/**
 * The S3 adapter, its SDK (@aws-sdk/client-s3, lib-storage, the presigner: ≈ 20 MB of RSS) loaded on the first
 * call instead of at start: most processes (every one on the filesystem driver, an API that never exports)
 * never need it.
 */
export function lazyS3Storage(opts: S3StorageOptions): ObjectStorage {
  let loaded: Promise<ObjectStorage> | undefined;
  const s3 = () => (loaded ??= import('./s3-storage.ts').then((m) => m.createS3Storage(opts)));
  return {
    kind: 's3',
    put: async (key, body, o) => (await s3()).put(key, body, o),
    delete: async (key) => (await s3()).delete(key),
    exists: async (key) => (await s3()).exists(key),
    signedUrl: async (key, o) => (await s3()).signedUrl(key, o),
    // S3's multipart floor; a constant, so it needs no SDK.
    minPartBytes: 5 * 1024 * 1024,
    beginUpload: async (key, o) => (await s3()).beginUpload(key, o),
    uploadPart: async (state, part) => (await s3()).uploadPart(state, part),
    completeUpload: async (state) => (await s3()).completeUpload(state),
    abortUpload: async (state) => (await s3()).abortUpload(state),
  };
}

export type { StorageConfig } from '../config.ts';

/** The configured adapter, and the routes it needs (the filesystem adapter's download route). */
export function createStorage(config: StorageConfig, publicUrl: string): { storage: ObjectStorage; routes: ModuleRoutes[] } {
  if (config.driver === 's3') {
    const { bucket, region, endpoint, forcePathStyle } = config.s3;
    if (!bucket) throw new Error('STORAGE_S3_BUCKET is required with STORAGE_DRIVER=s3');
    return { storage: lazyS3Storage({ bucket, region, endpoint, forcePathStyle }), routes: [] };
  }
  const storage: FsStorage = createFsStorage({ root: path.resolve(config.dir), secret: config.signingKey, publicUrl });
  return { storage, routes: [storageRoutes(storage)] };
}
