//! Roles and what each may do: the single table every write endpoint consults.

/// A key's role. Reads are public unless configured otherwise; every write needs a key
/// whose role allows the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Viewer,
    Importer,
    Planner,
    DutyOfficer,
    Sensor,
    Admin,
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read features, tiles and layers (when reads are not public).
    Read,
    /// Create, replace, patch or delete single features.
    EditFeatures,
    /// Upload whole files.
    ImportFiles,
    /// Change response plans.
    EditPlans,
    /// Acknowledge and resolve warnings.
    HandleWarnings,
    /// Post sensor readings.
    PostReadings,
    /// Manage keys and server settings.
    Administer,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Viewer,
        Role::Importer,
        Role::Planner,
        Role::DutyOfficer,
        Role::Sensor,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Importer => "importer",
            Role::Planner => "planner",
            Role::DutyOfficer => "duty_officer",
            Role::Sensor => "sensor",
            Role::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The permission table. Admin may do everything; a sensor key may only post
    /// readings, so a stolen device key cannot edit the map.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Viewer => matches!(action, Read),
            Role::Importer => matches!(action, Read | ImportFiles),
            Role::Planner => matches!(action, Read | EditFeatures | EditPlans),
            Role::DutyOfficer => matches!(action, Read | HandleWarnings),
            Role::Sensor => matches!(action, PostReadings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_planners_and_admins_edit_features() {
        let editors: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(Action::EditFeatures))
            .collect();
        assert_eq!(editors, vec![Role::Planner, Role::Admin]);
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
    }
}
