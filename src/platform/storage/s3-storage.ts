import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Transform, type Readable } from 'node:stream';
import { checkFilename, checkKey, StorageError, type LinkOptions, type ObjectStorage, type PutOptions, type UploadState } from './storage.ts';

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
  async function abortUpload(state: UploadState): Promise<void> {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: checkKey(state.key), UploadId: state.uploadId }));
    } catch (err) {
      // 404: already gone. 405/501: a server without AbortMultipartUpload (some S3-compatible ones); the
      // bucket's lifecycle rule for incomplete multipart uploads removes the parts.
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status !== 404 && status !== 405 && status !== 501) throw err;
    }
  }
  return {
    kind: 's3',
    client,
    minPartBytes: 5 * 1024 * 1024,
    async beginUpload(key: string, putOpts: PutOptions) {
      const r = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: checkKey(key), ContentType: putOpts.contentType }));
      if (!r.UploadId) throw new StorageError('CreateMultipartUpload returned no UploadId');
      return { key, contentType: putOpts.contentType, bytes: 0, uploadId: r.UploadId, parts: [] };
    },
    async uploadPart(state: UploadState, part: Buffer | Buffer[]) {
      const body = Array.isArray(part) ? Buffer.concat(part) : part;
      // Part numbers follow the state: a part uploaded again after a crash replaces the earlier upload of it.
      const n = state.parts.length + 1;
      const r = await client.send(new UploadPartCommand({ Bucket, Key: checkKey(state.key), UploadId: state.uploadId, PartNumber: n, Body: body, ContentLength: body.length }));
      if (!r.ETag) throw new StorageError('UploadPart returned no ETag');
      return { ...state, bytes: state.bytes + body.length, parts: [...state.parts, { n, bytes: body.length, etag: r.ETag }] };
    },
    async completeUpload(state: UploadState) {
      const Key = checkKey(state.key);
      if (state.parts.length === 0) {
        // A multipart upload needs a part; an empty object is a plain PUT.
        await client.send(new PutObjectCommand({ Bucket, Key, Body: Buffer.alloc(0), ContentType: state.contentType }));
        await abortUpload(state);
        return { bytes: 0 };
      }
      // Parts past the state's (uploaded by a writer that died before saving them) are left out, and S3
      // discards them with the upload.
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key,
          UploadId: state.uploadId,
          MultipartUpload: { Parts: state.parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
        }),
      );
      return { bytes: state.bytes };
    },
    abortUpload,
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
