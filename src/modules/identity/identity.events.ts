/**
 * Identity publishes no events. What happens to accounts and sessions is recorded in the platform
 * audit chain; signup's facts (a user joined with an org) are tenancy's to publish.
 */
export {};
