//! A prepared sandbox as bytes, for the spawner to rebuild on its side.

use std::io;

use super::PreparedSandbox;

impl PreparedSandbox {
    /// Writes what [`PreparedSandbox::decode`] reads (in the spawner).
    pub(crate) fn encode(&self, message: &mut Vec<u8>) {
        let put = |message: &mut Vec<u8>, bytes: &[u8]| {
            message.extend((bytes.len() as u32).to_ne_bytes());
            message.extend(bytes);
        };
        message.extend((self.tmp_dirs.len() as u32).to_ne_bytes());
        for dir in &self.tmp_dirs {
            put(message, dir.as_bytes());
        }
        message.extend((self.binds.len() as u32).to_ne_bytes());
        for (source, destination, writable) in &self.binds {
            put(message, source.as_bytes());
            put(message, destination.as_bytes());
            message.extend(u32::from(*writable).to_ne_bytes());
        }
        let (has_user, uid, gid) = match self.user {
            Some((uid, gid)) => (1, uid, gid),
            None => (0, 0, 0),
        };
        for value in [
            u32::from(self.private_tmp),
            has_user,
            uid,
            gid,
            self.old_tmp_at.map_or(u32::MAX, |fd| fd as u32),
            u32::from(self.pid_namespace),
        ] {
            message.extend(value.to_ne_bytes());
        }
        put(message, self.workdir.as_bytes());
        message.extend((self.hidden.len() as u32).to_ne_bytes());
        for dir in &self.hidden {
            put(message, dir.as_bytes());
        }
        // No parts: the host's root.
        let parts: Vec<&std::ffi::CStr> = self
            .root
            .as_ref()
            .map(|plan| plan.parts().to_vec())
            .unwrap_or_default();
        message.extend((parts.len() as u32).to_ne_bytes());
        for part in parts {
            put(message, part.to_bytes());
        }
        message.extend((self.mount_points.len() as u32).to_ne_bytes());
        for (path, file, owner) in &self.mount_points {
            put(message, path.as_bytes());
            message.extend(u32::from(*file).to_ne_bytes());
            message.extend(owner.to_ne_bytes());
        }
    }

    /// Reads a sandbox [`PreparedSandbox::encode`] wrote; `network_fd` is
    /// the namespace's descriptor received with it. Its processes need not
    /// re-execute berth: the spawner they fork from is small.
    pub(crate) fn decode(
        reader: &mut crate::spawner::Reader<'_>,
        network_fd: Option<i32>,
    ) -> io::Result<PreparedSandbox> {
        let tmp_dirs = reader.c_strings()?;
        let binds: Vec<_> = (0..reader.u32()?)
            .map(|_| Ok((reader.c_string()?, reader.c_string()?, reader.u32()? == 1)))
            .collect::<io::Result<_>>()?;
        let private_tmp = reader.u32()? == 1;
        let has_user = reader.u32()? == 1;
        let (uid, gid) = (reader.u32()?, reader.u32()?);
        let old_tmp_at = reader.u32()?;
        let pid_namespace = reader.u32()? == 1;
        let workdir = reader.c_string()?;
        let hidden = reader.c_strings()?;
        let root_parts = reader.c_strings()?;
        // Checked here too: the child must not have to.
        if binds.len() > super::root::MAX_BINDS && !root_parts.is_empty() {
            return Err(io::Error::other(
                "too many bind mounts for an image instance",
            ));
        }
        let mount_points = (0..reader.u32()?)
            .map(|_| Ok((reader.c_string()?, reader.u32()? == 1, reader.u32()?)))
            .collect::<io::Result<_>>()?;
        if has_user {
            super::seccomp::prepare();
        }
        Ok(PreparedSandbox {
            tmp_dirs,
            binds,
            private_tmp,
            user: has_user.then_some((uid, gid)),
            old_tmp_at: (old_tmp_at != u32::MAX).then_some(old_tmp_at as i32),
            _old_tmp_reserve: None,
            network_fd,
            _network: None,
            pid_namespace,
            reexec: false,
            workdir,
            hidden,
            root: match root_parts.is_empty() {
                true => None,
                false => Some(super::root::RootPlan::from_parts(root_parts)?),
            },
            mount_points,
        })
    }
}
