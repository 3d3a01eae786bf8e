import path from 'node:path';
import { createFsStorage, type FsStorage } from './fs-storage.ts';
import { createS3Storage } from './s3-storage.ts';
import type { ObjectStorage } from './storage.ts';
import type { StorageConfig } from '../config.ts';
import type { ModuleRoutes } from '../http/module-routes.ts';
import { storageRoutes } from './storage.routes.ts';

export * from './storage.ts';
export { createFsStorage, type FsStorage } from './fs-storage.ts';
export { createS3Storage, type S3StorageOptions } from './s3-storage.ts';

export type { StorageConfig } from '../config.ts';

/** The configured adapter, and the routes it needs (the filesystem adapter's download route). */
export function createStorage(config: StorageConfig, publicUrl: string): { storage: ObjectStorage; routes: ModuleRoutes[] } {
  if (config.driver === 's3') {
    const { bucket, region, endpoint, forcePathStyle } = config.s3;
    if (!bucket) throw new Error('STORAGE_S3_BUCKET is required with STORAGE_DRIVER=s3');
    return { storage: createS3Storage({ bucket, region, endpoint, forcePathStyle }), routes: [] };
  }
  const storage: FsStorage = createFsStorage({ root: path.resolve(config.dir), secret: config.signingKey, publicUrl });
  return { storage, routes: [storageRoutes(storage)] };
}
