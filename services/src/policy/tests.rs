use super::*;

fn user(id: &str) -> Principal {
    Principal::new(id, vec![Role::User])
}

fn admin(id: &str) -> Principal {
    Principal::new(id, vec![Role::User, Role::Admin])
}

fn kind(r: Result<()>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.kind(),
    }
}

/// The full matrix: each action × {anonymous, owner, other user, admin, roleless}.
#[test]
fn rbac_matrix() {
    let owner = user("u1");
    let other = user("u2");
    let adm = admin("a1");
    let roleless = Principal::new("u1", vec![]);
    #[rustfmt::skip]
    let table: &[(Action, [&str; 5])] = &[
        //                     anon            owner        other        admin  roleless
        (Action::Register,     ["ok",          "ok",        "ok",        "ok",  "ok"]),
        (Action::Login,        ["ok",          "ok",        "ok",        "ok",  "ok"]),
        (Action::Logout,       ["ok",          "ok",        "ok",        "ok",  "ok"]),
        (Action::ReadUser,     ["unauthorized", "ok",       "ok",        "ok",  "forbidden"]),
        (Action::UpdateUser,   ["unauthorized", "ok",       "forbidden", "ok",  "forbidden"]),
        (Action::DeleteUser,   ["unauthorized", "ok",       "forbidden", "ok",  "forbidden"]),
        (Action::ListUsers,    ["unauthorized", "forbidden", "forbidden", "ok", "forbidden"]),
        (Action::Follow,       ["unauthorized", "ok",       "ok",        "ok",  "forbidden"]),
        (Action::CreateContent,["unauthorized", "ok",       "ok",        "ok",  "forbidden"]),
        (Action::ReadContent,  ["unauthorized", "ok",       "ok",        "ok",  "forbidden"]),
        (Action::UpdateContent,["unauthorized", "ok",       "forbidden", "ok",  "forbidden"]),
        (Action::DeleteContent,["unauthorized", "ok",       "forbidden", "ok",  "forbidden"]),
        (Action::ReadFeed,     ["unauthorized", "ok",       "ok",        "ok",  "forbidden"]),
        (Action::PublishChannel,["unauthorized", "forbidden", "forbidden", "ok", "forbidden"]),
        (Action::ManageDeadLetters,["unauthorized", "forbidden", "forbidden", "ok", "forbidden"]),
        (Action::KillActor,    ["unauthorized", "forbidden", "forbidden", "ok", "forbidden"]),
        (Action::ViewCluster,  ["unauthorized", "forbidden", "forbidden", "ok", "forbidden"]),
    ];
    for (action, expected) in table {
        let got = [
            kind(authorize(None, *action, Some("u1"))),
            kind(authorize(Some(&owner), *action, Some("u1"))),
            kind(authorize(Some(&other), *action, Some("u1"))),
            kind(authorize(Some(&adm), *action, Some("u1"))),
            kind(authorize(Some(&roleless), *action, Some("u1"))),
        ];
        assert_eq!(&got, expected, "{action:?}");
    }
}

#[test]
fn owner_scoped_action_without_owner_is_admin_only() {
    assert_eq!(kind(authorize(Some(&user("u1")), Action::UpdateContent, None)), "forbidden");
    assert_eq!(kind(authorize(Some(&admin("a")), Action::UpdateContent, None)), "ok");
}
