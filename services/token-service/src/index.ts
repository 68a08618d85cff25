export { CredentialService } from "./credential-service.js";
export type { CredentialServiceOptions } from "./credential-service.js";
