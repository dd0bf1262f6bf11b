"""skill bundles: the files of a skill folder, the SKILL.md text as imported, allowed-tools

- skill_blobs: the bytes of bundled files, content-addressed (sha256), stored once
- skill_files: which files (relative path, executable bit) each skill version holds
- skills.skill_md: the SKILL.md text as imported, so export writes back the same bytes
- skills.allowed_tools: the spec's space-delimited tool list
- skills.license: TEXT (the spec sets no length; a longer one failed on PostgreSQL)

On SQLite, changing skills.license rebuilds the table; memory.db runs migrations with foreign keys off
(SQLite's procedure for schema changes) so the rebuild does not null adapters.skill_id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('skill_blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('skill_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('skill_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('executable', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['sha256'], ['skill_blobs.sha256'], ),
    sa.ForeignKeyConstraint(['skill_id'], ['skills.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('skill_id', 'path', name='uq_skill_files_skill_path')
    )
    with op.batch_alter_table('skill_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_skill_files_sha256'), ['sha256'], unique=False)

    with op.batch_alter_table('skills', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allowed_tools', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('skill_md', sa.Text(), nullable=True))
        batch_op.alter_column('license',
               existing_type=sa.VARCHAR(length=256),
               type_=sa.Text(),
               existing_nullable=True)



def downgrade() -> None:
    with op.batch_alter_table('skills', schema=None) as batch_op:
        batch_op.alter_column('license',
               existing_type=sa.Text(),
               type_=sa.VARCHAR(length=256),
               existing_nullable=True)
        batch_op.drop_column('skill_md')
        batch_op.drop_column('allowed_tools')

    with op.batch_alter_table('skill_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_skill_files_sha256'))

    op.drop_table('skill_files')
    op.drop_table('skill_blobs')
