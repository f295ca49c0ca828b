//! Roles and the one table that maps them to permissions (SEC-2). Routes name a permission;
//! nothing else decides who may do what.

use serde::{Deserialize, Serialize};

/// A member's role, which decides their permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Agent,
    Reviewer,
    /// Read-only access for compliance staff.
    Auditor,
    /// External: sees only what is shared with its partner organisation.
    Partner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Permission {
    TenantRead,
    TenantManage,
    /// Ownership itself: granting the owner role, closing the tenant.
    TenantOwn,
    MembersRead,
    MembersManage,
    TokensManage,
    AuditRead,
    AuditExport,
    RequestLogRead,
    ContactsRead,
    ContactsWrite,
    ConversationsRead,
    ConversationsReply,
    ConversationsManage,
    ChannelsManage,
    KnowledgeRead,
    KnowledgeManage,
    AgentConfigure,
    GuardrailsManage,
    ExecutionsRead,
    /// Seeing an execution record with the real values behind its placeholders, restored from
    /// the conversation's vault; each reveal is an audit event.
    ExecutionsReveal,
    ReviewsRead,
    ReviewsDecide,
    ReviewsRequest,
    DataSubjectRights,
    RetentionManage,
    PartnerSharedRead,
    /// Tickets and tasks: a partner holding these sees only what is shared with it (SEC-2).
    TicketsRead,
    TicketsWrite,
    TasksRead,
    TasksWrite,
}

use Permission::*;

const ADMIN: &[Permission] = &[
    TenantRead,
    TenantManage,
    MembersRead,
    MembersManage,
    TokensManage,
    AuditRead,
    AuditExport,
    RequestLogRead,
    ContactsRead,
    ContactsWrite,
    ConversationsRead,
    ConversationsReply,
    ConversationsManage,
    ChannelsManage,
    KnowledgeRead,
    KnowledgeManage,
    AgentConfigure,
    GuardrailsManage,
    ExecutionsRead,
    ExecutionsReveal,
    ReviewsRead,
    ReviewsDecide,
    ReviewsRequest,
    DataSubjectRights,
    RetentionManage,
    PartnerSharedRead,
    TicketsRead,
    TicketsWrite,
    TasksRead,
    TasksWrite,
];
const OWNER: &[Permission] = &[
    TenantOwn,
    TenantRead,
    TenantManage,
    MembersRead,
    MembersManage,
    TokensManage,
    AuditRead,
    AuditExport,
    RequestLogRead,
    ContactsRead,
    ContactsWrite,
    ConversationsRead,
    ConversationsReply,
    ConversationsManage,
    ChannelsManage,
    KnowledgeRead,
    KnowledgeManage,
    AgentConfigure,
    GuardrailsManage,
    ExecutionsRead,
    ExecutionsReveal,
    ReviewsRead,
    ReviewsDecide,
    ReviewsRequest,
    DataSubjectRights,
    RetentionManage,
    PartnerSharedRead,
    TicketsRead,
    TicketsWrite,
    TasksRead,
    TasksWrite,
];
const AGENT: &[Permission] = &[
    TenantRead,
    MembersRead,
    ContactsRead,
    ContactsWrite,
    ConversationsRead,
    ConversationsReply,
    ConversationsManage,
    KnowledgeRead,
    ExecutionsRead,
    ReviewsRead,
    ReviewsRequest,
    TicketsRead,
    TicketsWrite,
    TasksRead,
    TasksWrite,
];
const REVIEWER: &[Permission] = &[
    TenantRead,
    MembersRead,
    ContactsRead,
    ConversationsRead,
    KnowledgeRead,
    ExecutionsRead,
    ExecutionsReveal,
    ReviewsRead,
    ReviewsDecide,
    ReviewsRequest,
    TicketsRead,
    TasksRead,
];
const AUDITOR: &[Permission] = &[
    TenantRead,
    MembersRead,
    AuditRead,
    AuditExport,
    RequestLogRead,
    ContactsRead,
    ConversationsRead,
    KnowledgeRead,
    ExecutionsRead,
    ReviewsRead,
    TicketsRead,
    TasksRead,
];
/// The ticket and task reads answer a partner with what is shared with its organisation only.
const PARTNER: &[Permission] = &[TenantRead, PartnerSharedRead, TicketsRead, TasksRead];

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::Agent,
        Role::Reviewer,
        Role::Auditor,
        Role::Partner,
    ];

    /// The permission table.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Role::Owner => OWNER,
            Role::Admin => ADMIN,
            Role::Agent => AGENT,
            Role::Reviewer => REVIEWER,
            Role::Auditor => AUDITOR,
            Role::Partner => PARTNER,
        }
    }

    pub fn can(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    /// A member may hand out a role (by invitation, role change or API token) only when that
    /// role can do nothing the member cannot.
    pub fn can_grant(self, other: Role) -> bool {
        other.permissions().iter().all(|p| self.can(*p))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Partner => "partner",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantRead => "tenant.read",
            TenantManage => "tenant.manage",
            TenantOwn => "tenant.own",
            MembersRead => "members.read",
            MembersManage => "members.manage",
            TokensManage => "tokens.manage",
            AuditRead => "audit.read",
            AuditExport => "audit.export",
            RequestLogRead => "request_log.read",
            ContactsRead => "contacts.read",
            ContactsWrite => "contacts.write",
            ConversationsRead => "conversations.read",
            ConversationsReply => "conversations.reply",
            ConversationsManage => "conversations.manage",
            ChannelsManage => "channels.manage",
            KnowledgeRead => "knowledge.read",
            KnowledgeManage => "knowledge.manage",
            AgentConfigure => "agent.configure",
            GuardrailsManage => "guardrails.manage",
            ExecutionsRead => "executions.read",
            ExecutionsReveal => "executions.reveal",
            ReviewsRead => "reviews.read",
            ReviewsDecide => "reviews.decide",
            ReviewsRequest => "reviews.request",
            DataSubjectRights => "dsr.manage",
            RetentionManage => "retention.manage",
            PartnerSharedRead => "partner.shared.read",
            TicketsRead => "tickets.read",
            TicketsWrite => "tickets.write",
            TasksRead => "tasks.read",
            TasksWrite => "tasks.write",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auditor_role_holds_no_permission_that_writes() {
        let writes = [
            TenantManage,
            TenantOwn,
            MembersManage,
            TokensManage,
            ContactsWrite,
            ConversationsReply,
            ConversationsManage,
            ChannelsManage,
            KnowledgeManage,
            AgentConfigure,
            GuardrailsManage,
            ReviewsDecide,
            ReviewsRequest,
            DataSubjectRights,
            RetentionManage,
            TicketsWrite,
            TasksWrite,
        ];
        for p in writes {
            assert!(!Role::Auditor.can(p), "auditor can {}", p.as_str());
        }
    }

    #[test]
    fn only_the_owner_can_grant_ownership() {
        for role in Role::ALL {
            assert_eq!(role.can_grant(Role::Owner), role == Role::Owner, "{role:?}");
        }
    }

    #[test]
    fn a_partner_sees_only_what_is_shared_with_it() {
        assert_eq!(
            Role::Partner.permissions(),
            &[TenantRead, PartnerSharedRead, TicketsRead, TasksRead]
        );
    }

    #[test]
    fn only_owners_admins_and_reviewers_may_reveal_what_an_execution_masked() {
        let revealers: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| r.can(ExecutionsReveal))
            .collect();
        assert_eq!(revealers, vec![Role::Owner, Role::Admin, Role::Reviewer]);
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
