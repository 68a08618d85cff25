export { CredentialService } from "./credential-service.js";
export type { CredentialServiceOptions, CredentialServiceEvents } from "./credential-service.js";
export { TokenCache, TokenUnavailableError } from "./token-cache.js";
export type { TokenCacheOptions } from "./token-cache.js";
export {
  MICROSOFT_CLOUDS,
  MicrosoftTokenSource,
  GoogleTokenSource,
  msalConfiguration,
  microsoftScope,
  microsoftAuthorityHost,
  certificateThumbprint,
  parseServiceAccountKey,
} from "./providers.js";
export type { AccessToken, TokenSource, MicrosoftCredentials, MicrosoftCloudName, GoogleServiceAccountKey } from "./providers.js";
export { classifyTokenFailure, TokenEndpointError, CredentialConfigError } from "./classify.js";
export type { TokenFailure } from "./classify.js";
export { aadstsEntry, catalogue, serverSignal, passwordRefused, fillFix } from "./catalogue.js";
export type { CatalogueEntry, FixContext } from "./catalogue.js";
export { expiryWarnings, certificateExpiry } from "./expiry.js";
export type { ExpiryWarning } from "./expiry.js";
export { GrantStore, grantKey, sealGrant, openGrant } from "./grant-store.js";
export type { GrantKey } from "./grant-store.js";
export { MicrosoftDelegatedSource } from "./delegated.js";
export type { DelegatedMailbox, DeviceCodeStart } from "./delegated.js";
