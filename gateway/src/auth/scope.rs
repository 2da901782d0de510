//! OpenClaw's operator scopes, as its gateway checks them (`authorizeGatewayMethod`):
//! `health` is always allowed after connect; the `node` role may call no operator method;
//! `operator.admin` satisfies every scope; `operator.write` also satisfies `operator.read`;
//! a method OpenClaw does not classify needs `operator.admin`.
//! Which scope each method needs is `api::required_scope` (the method list lives there).

use crate::error::ApiError;

pub const READ: &str = "operator.read";
pub const WRITE: &str = "operator.write";
pub const ADMIN: &str = "operator.admin";
pub const APPROVALS: &str = "operator.approvals";
pub const QUESTIONS: &str = "operator.questions";

/// Every operator scope OpenClaw defines; what the HTTP API's bearer token grants.
pub const ALL_OPERATOR: [&str; 6] =
    [ADMIN, READ, WRITE, "operator.approvals", "operator.questions", "operator.pairing"];

/// Whether `granted` satisfies `required` (OpenClaw's `operatorScopeSatisfied`, for the scopes
/// clawgate's methods use).
pub fn satisfied(required: &str, granted: &[String]) -> bool {
    let has = |s: &str| granted.iter().any(|g| g == s);
    has(required) || has(ADMIN) || (required == READ || required == QUESTIONS) && has(WRITE)
}

/// Authorises a call by a client with `role` and `granted` scopes; `required` is the scope the
/// method needs (`None`: always allowed, i.e. `health`).
pub fn authorize(role: &str, granted: &[String], required: Option<&'static str>) -> Result<(), ApiError> {
    let Some(required) = required else { return Ok(()) };
    if role != "operator" {
        return Err(ApiError::invalid(format!("unauthorized role: {role}")));
    }
    if satisfied(required, granted) { Ok(()) } else { Err(ApiError::missing_scope(required)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn openclaw_scope_rules() {
        assert!(authorize("operator", &[], None).is_ok());
        assert!(authorize("node", &[], None).is_ok());
        let e = authorize("operator", &[], Some(READ)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::MissingScope(READ), "missing scope: operator.read")
        );
        assert_eq!(e.body()["details"]["requiredScopes"][0], READ);
        assert!(authorize("operator", &scopes(&[READ]), Some(READ)).is_ok());
        assert!(authorize("operator", &scopes(&[WRITE]), Some(READ)).is_ok());
        assert!(authorize("operator", &scopes(&[ADMIN]), Some(ADMIN)).is_ok());
        let e = authorize("operator", &scopes(&[READ, WRITE]), Some(ADMIN)).unwrap_err();
        assert_eq!(e.message, "missing scope: operator.admin");
        assert!(authorize("operator", &scopes(&["operator.pairing"]), Some(READ)).is_err());
        let e = authorize("node", &scopes(&[ADMIN]), Some(READ)).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::InvalidRequest, "unauthorized role: node"));
    }
}
