/**
 * Wire schemas live next to their routes: the admin ones in directory.routes.ts, the SCIM resources
 * (RFC 7643/7644 shapes) in directory.scim.routes.ts. The SCIM resource mapping is directory.scim.ts.
 */
export {};
