// s3rver (a test-only local S3-compatible server) ships no types; the part the storage tests use.
declare module 's3rver' {
  interface S3rverOptions {
    port?: number;
    address?: string;
    silent?: boolean;
    directory?: string;
    configureBuckets?: Array<{ name: string; configs: unknown[] }>;
  }
  // eslint-disable-next-line no-restricted-syntax -- describes the package's own default export
  export default class S3rver {
    constructor(opts: S3rverOptions);
    run(): Promise<{ port: number; address: string }>;
    close(): Promise<void>;
  }
}
