//! The one error type of the filesystem layer and its errno mapping.
//!
//! Every operation of [`super::Fs`] returns [`FsError`]; [`FsError::errno`] is the only
//! place in the crate that chooses an errno (docs/SEMANTICS.md lists them).

use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("name too long")]
    NameTooLong,
    #[error("permission denied")]
    Access,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("file was removed by another client")]
    Stale,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("buffer too small")]
    Range,
    #[error("file too large")]
    TooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("bad file handle")]
    BadHandle,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// TEEMS refused the operation under the share policy (DESIGN §11).
    #[error("denied by the share policy: {0}")]
    Policy(MetaError),
    /// TEEMS could not be reached or failed the operation.
    #[error("metadata service: {0}")]
    Meta(MetaError),
    /// Blob stores failed, or returned data that did not verify.
    #[error("blob storage: {0}")]
    Blob(String),
    /// A metadata value, manifest or directory blob did not decode.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl FsError {
    /// The errno the kernel sees for this error. The only errno mapping in the crate.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Access => libc::EACCES,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Stale => libc::ESTALE,
            FsError::NoXattr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::BadHandle => libc::EBADF,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            // Policy refusals surface as EACCES (DESIGN §11: "EACCES / EPERM at the syscall").
            FsError::Policy(_) => libc::EACCES,
            FsError::Meta(_) | FsError::Blob(_) | FsError::Corrupt { .. } => libc::EIO,
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> FsError {
        FsError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

impl From<MetaError> for FsError {
    fn from(err: MetaError) -> FsError {
        match err {
            // A key that vanished under us was removed by another client.
            MetaError::NotFound => FsError::NotFound,
            MetaError::Denied | MetaError::NotWriter => FsError::Policy(err),
            MetaError::Unavailable(_) | MetaError::BadRequest(_) => FsError::Meta(err),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refusals_are_eacces_and_outages_eio() {
        assert_eq!(FsError::from(MetaError::NotWriter).errno(), libc::EACCES);
        assert_eq!(
            FsError::from(MetaError::Unavailable("x".into())).errno(),
            libc::EIO
        );
        assert_eq!(FsError::from(MetaError::NotFound).errno(), libc::ENOENT);
    }
}
