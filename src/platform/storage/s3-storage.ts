import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Transform, type Readable } from 'node:stream';
import { checkFilename, checkKey, type LinkOptions, type ObjectStorage, type PutOptions } from './storage.ts';

export interface S3StorageOptions {
  bucket: string;
  region: string;
  /** S3-compatible endpoint (MinIO, R2, a local test server); unset = AWS. */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** Explicit credentials (tests); unset = the AWS SDK's default chain (env, profile, instance role). */
  credentials?: S3ClientConfig['credentials'];
  /** Multipart part size (≥ 5 MiB); memory held by a write is about partSize × queueSize. */
  partSize?: number;
}

/**
 * S3-compatible object storage: streamed multipart upload (bounded memory: a few parts in flight),
 * presigned GET links that carry the download name.
 */
export function createS3Storage(opts: S3StorageOptions): ObjectStorage & { client: S3Client } {
  const client = new S3Client({
    region: opts.region,
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    forcePathStyle: opts.forcePathStyle ?? Boolean(opts.endpoint),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  });
  const Bucket = opts.bucket;
  return {
    kind: 's3',
    client,
    async put(key: string, body: Readable, putOpts: PutOptions) {
      checkKey(key);
      let bytes = 0;
      const counted = body.pipe(
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            bytes += chunk.length;
            done(null, chunk);
          },
        }),
      );
      body.once('error', (err) => counted.destroy(err));
      const upload = new Upload({
        client,
        params: { Bucket, Key: key, Body: counted, ContentType: putOpts.contentType },
        partSize: opts.partSize ?? 5 * 1024 * 1024,
        queueSize: 2,
        // A failed upload aborts its multipart upload: no orphaned parts are billed.
        leavePartsOnError: false,
      });
      const onAbort = () => void upload.abort().catch(() => undefined);
      putOpts.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        if (putOpts.signal?.aborted) throw putOpts.signal.reason ?? new Error('aborted');
        await upload.done();
      } finally {
        putOpts.signal?.removeEventListener('abort', onAbort);
      }
      return { bytes };
    },
    async delete(key: string) {
      await client.send(new DeleteObjectCommand({ Bucket, Key: checkKey(key) }));
    },
    async exists(key: string) {
      try {
        await client.send(new HeadObjectCommand({ Bucket, Key: checkKey(key) }));
        return true;
      } catch (err) {
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
        throw err;
      }
    },
    async signedUrl(key: string, link: LinkOptions) {
      const cmd = new GetObjectCommand({
        Bucket,
        Key: checkKey(key),
        ResponseContentDisposition: `attachment; filename="${checkFilename(link.filename)}"`,
        ResponseContentType: link.contentType,
      });
      return getSignedUrl(client, cmd, { expiresIn: link.expiresInSec });
    },
  };
}
